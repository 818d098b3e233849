//! A minimal blocking Kinesis client for `sluiced put` and `sluiced tail`: AWS JSON 1.1
//! over one HTTP/1.1 request per call, signed with SigV4 when credentials are configured.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach sluiced at {addr}: {source} (is it running?)")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("I/O error talking to sluiced: {0}")]
    Io(#[from] std::io::Error),
    #[error("{kind}: {message}")]
    Api { kind: String, message: String },
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

/// Talks to one sluiced's Kinesis API.
pub struct KinesisClient {
    addr: SocketAddr,
    creds: Option<(String, String)>,
}

impl KinesisClient {
    /// A client for `addr`, signing with `creds` (access key id, secret) if given.
    pub fn new(addr: SocketAddr, creds: Option<(String, String)>) -> Self {
        KinesisClient { addr, creds }
    }

    /// Calls `Kinesis_20131202.<op>` with `body`.
    pub fn call(&self, op: &str, body: &Value) -> Result<Value, ClientError> {
        let body = body.to_string();
        let target = format!("Kinesis_20131202.{op}");
        let host = self.addr.to_string();
        let mut s =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).map_err(|source| {
                ClientError::Connect {
                    addr: self.addr,
                    source,
                }
            })?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut head = format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: {target}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        if let Some((akid, secret)) = &self.creds {
            let (date, auth) = crate::sigv4::sign(
                &host,
                &target,
                body.as_bytes(),
                akid,
                secret,
                None,
                "us-east-1",
                crate::record::now_ms() / 1000,
            );
            head.push_str(&format!("X-Amz-Date: {date}\r\nAuthorization: {auth}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body.as_bytes())?;
        let mut r = BufReader::new(s);
        let mut status_line = String::new();
        r.read_line(&mut status_line)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| ClientError::Protocol(status_line.clone()))?;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        let mut text = String::new();
        r.read_to_string(&mut text)?;
        let v: Value =
            serde_json::from_str(&text).map_err(|_| ClientError::Protocol(text.clone()))?;
        if status != 200 {
            return Err(ClientError::Api {
                kind: v["__type"].as_str().unwrap_or("Error").to_string(),
                message: v["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(v)
    }

    /// The shard ids of a stream.
    pub fn shards(&self, stream: &str) -> Result<Vec<String>, ClientError> {
        let v = self.call("ListShards", &json!({ "StreamName": stream }))?;
        Ok(v["Shards"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["ShardId"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}
