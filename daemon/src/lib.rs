//! `sluiced`: the sluice daemon as a library, so that tests and benchmarks can reach its
//! parts. Data flows one way: [`config`] → [`supervisor`] → [`pipeline`] → [`plugins`];
//! [`telemetry`] observes all of them. See ARCHITECTURE.md for the map.

pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod http;
pub mod names;
pub mod pipeline;
pub mod plugins;
pub mod record;
pub mod sdnotify;
pub mod sigv4;
pub mod spec;
pub mod stream;
pub mod supervisor;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod testing;
pub mod watch;
