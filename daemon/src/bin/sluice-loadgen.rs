//! `sluice-loadgen`: a Kinesis PutRecords load generator for benchmarks.
//!
//! Each connection is a thread with one keep-alive HTTP/1.1 connection sending the same
//! pre-encoded PutRecords request (N records of CloudEvents-like JSON padded to the
//! requested size, each with its own partition key so they spread over the shards), as
//! fast as answers come back. Prints calls/s, records/s, MB/s and latency percentiles.
//!
//! `sluice-loadgen --endpoint 127.0.0.1:4567 --stream events --connections 4 --seconds 10`

use base64::Engine as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Args {
    endpoint: String,
    stream: String,
    connections: usize,
    records: usize,
    size: usize,
    seconds: f64,
    /// Stop once this many records were sent in all (each connection sends its share).
    total: Option<u64>,
    read: bool,
    shards: usize,
    /// Distinct requests per connection, sent in turn: records (ids, keys) differ between
    /// them, so a run holds `connections × variants × records` distinct records.
    variants: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        endpoint: "127.0.0.1:4567".into(),
        stream: "events".into(),
        connections: 4,
        records: 500,
        size: 333,
        seconds: 10.0,
        total: None,
        read: false,
        shards: 4,
        variants: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => a.endpoint = val()?,
            "--stream" => a.stream = val()?,
            "--connections" => a.connections = val()?.parse().map_err(|e| format!("--connections: {e}"))?,
            "--records" => a.records = val()?.parse().map_err(|e| format!("--records: {e}"))?,
            "--size" => a.size = val()?.parse().map_err(|e| format!("--size: {e}"))?,
                        "--seconds" => a.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--total" => a.total = Some(val()?.parse().map_err(|e| format!("--total: {e}"))?),
            "--read" => a.read = true,
            "--shards" => a.shards = val()?.parse().map_err(|e| format!("--shards: {e}"))?,
            "--variants" => a.variants = val()?.parse::<usize>().map_err(|e| format!("--variants: {e}"))?.max(1),
            "-h" | "--help" => {
                return Err("usage: sluice-loadgen [--endpoint HOST:PORT] [--stream NAME] [--connections N] [--records N] [--size BYTES] [--seconds S] [--total RECORDS] [--variants N]".into())
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn record(i: usize, size: usize) -> String {
    const TYPES: [&str; 3] = [
        "com.example.order.created",
        "com.example.order.shipped",
        "com.example.payment.settled",
    ];
    const SOURCES: [&str; 3] = [
        "/shop/eu-west",
        "/shop/us-east",
        "https://github.com/JoseLuisSR/awsmeter",
    ];
    let mut s = format!(
        r#"{{"specversion":"1.0","type":"{}","source":"{}","subject":"orders","id":"{i:08}-0000-4000-8000-000000000000","time":"2026-11-25T18:47:55.960Z","datacontenttype":"application/json","data":{{"orderId":"{i}","note":""#,
        TYPES[i % 3],
        SOURCES[(i / 3) % 3]
    );
    while s.len() + 3 < size {
        s.push('x');
    }
    s.push_str("\"}}");
    s
}

fn request(a: &Args, conn: usize, variant: usize) -> Vec<u8> {
    // Record numbers: 0..records in every connection's one request (as before variants
    // existed), else distinct per (connection, variant): 0..connections × variants × records.
    let base = if a.variants == 1 {
        0
    } else {
        (conn * a.variants + variant) * a.records
    };
    let recs: Vec<String> = (0..a.records)
        .map(|i| {
            let n = base + i;
            let data = base64::engine::general_purpose::STANDARD.encode(record(n, a.size));
            format!(r#"{{"Data":"{data}","PartitionKey":"c{conn}-k{n}"}}"#)
        })
        .collect();
    let body = format!(
        r#"{{"StreamName":"{}","Records":[{}]}}"#,
        a.stream,
        recs.join(",")
    );
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nX-Amz-Target: Kinesis_20131202.PutRecords\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
        a.endpoint,
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

/// Reads one response; returns (status, body).
fn response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, body))
}

/// One request on a fresh connection; returns the body.
fn post(endpoint: &str, target: &str, body: &str) -> Result<String, String> {
    let s = TcpStream::connect(endpoint).map_err(|e| format!("connect {endpoint}: {e}"))?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    write!(
        w,
        "POST / HTTP/1.1\r\nHost: {endpoint}\r\nX-Amz-Target: Kinesis_20131202.{target}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let (status, body) = response(&mut BufReader::new(s)).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    Ok(text)
}

fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let rest = json.split(&format!("\"{name}\":\"")).nth(1)?;
    rest.split('"').next()
}

/// Reads every shard from TRIM_HORIZON to the tip with GetRecords (Limit 10000).
fn read_all(a: &Args) {
    let started = Instant::now();
    let handles: Vec<_> = (0..a.shards)
        .map(|i| {
            let (endpoint, stream) = (a.endpoint.clone(), a.stream.clone());
            std::thread::spawn(move || -> Result<(u64, u64), String> {
                let body = format!(r#"{{"StreamName":"{stream}","ShardId":"shardId-{i:012}","ShardIteratorType":"TRIM_HORIZON"}}"#);
                let out = post(&endpoint, "GetShardIterator", &body)?;
                let mut it = field(&out, "ShardIterator").ok_or("no iterator")?.to_string();
                let (mut n, mut bytes) = (0u64, 0u64);
                loop {
                    let out = post(&endpoint, "GetRecords", &format!(r#"{{"ShardIterator":"{it}","Limit":10000}}"#))?;
                    let k = out.matches("\"SequenceNumber\"").count() as u64;
                    n += k;
                    bytes += out.len() as u64;
                    it = field(&out, "NextShardIterator").ok_or("no next iterator")?.to_string();
                    if k == 0 {
                        return Ok((n, bytes));
                    }
                }
            })
        })
        .collect();
    let (mut n, mut bytes) = (0, 0);
    for h in handles {
        match h.join() {
            Ok(Ok((k, b))) => {
                n += k;
                bytes += b;
            }
            Ok(Err(e)) => {
                eprintln!("read failed: {e}");
                std::process::exit(1);
            }
            Err(_) => std::process::exit(1),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "read shards={} records={n} seconds={secs:.1} records/s={:.0} response MB/s={:.1}",
        a.shards,
        n as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if a.read {
        read_all(&a);
        return;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..a.connections)
        .map(|c| {
            let reqs: Vec<Vec<u8>> = (0..a.variants).map(|v| request(&a, c, v)).collect();
            let endpoint = a.endpoint.clone();
            let records = a.records;
            // An equal share per connection, whole calls: the same records for every run.
            let calls = a.total.map(|t| {
                t.div_ceil(a.connections as u64)
                    .div_ceil(records.max(1) as u64)
            });
            std::thread::spawn(move || -> Result<(u64, u64, Vec<Duration>), String> {
                let s = TcpStream::connect(&endpoint)
                    .map_err(|e| format!("connect {endpoint}: {e}"))?;
                s.set_nodelay(true).ok();
                let mut w = s.try_clone().map_err(|e| e.to_string())?;
                let mut r = BufReader::new(s);
                let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::new());
                let mut made = 0u64;
                while Instant::now() < deadline && calls.is_none_or(|c| made < c) {
                    let req = &reqs[made as usize % reqs.len()];
                    made += 1;
                    let t = Instant::now();
                    w.write_all(req).map_err(|e| e.to_string())?;
                    let (status, body) = response(&mut r).map_err(|e| e.to_string())?;
                    lat.push(t.elapsed());
                    if status != 200 {
                        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
                    }
                    // FailedRecordCount is the first field of the answer.
                    let f = std::str::from_utf8(&body)
                        .ok()
                        .and_then(|b| b.split("\"FailedRecordCount\":").nth(1))
                        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                    failed += f;
                    ok += records as u64 - f;
                }
                Ok((ok, failed, lat))
            })
        })
        .collect();
    let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::new());
    for h in handles {
        match h.join() {
            Ok(Ok((o, f, l))) => {
                ok += o;
                failed += f;
                lat.extend(l);
            }
            Ok(Err(e)) => {
                eprintln!("connection failed: {e}");
                std::process::exit(1);
            }
            Err(_) => std::process::exit(1),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "connections={} records/call={} size={}B calls={} records={} failed={} seconds={:.1} records/s={:.0} MB/s={:.1} p50={:.2}ms p99={:.2}ms",
        a.connections,
        a.records,
        a.size,
        lat.len(),
        ok,
        failed,
        secs,
        ok as f64 / secs,
        ok as f64 * a.size as f64 / secs / 1e6,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}
