//! The load driver: plain TCP to an address that echoes (the Go tunnel proxy in front of
//! an overlay host, or a TCP echo server directly), so every host sees the same client.
//! Blocking sockets, one thread per connection; every read has a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

const IO_TIMEOUT: Duration = Duration::from_secs(60);
const CHUNK: usize = 64 * 1024;

pub fn connect(addr: &str) -> Result<TcpStream> {
    let conn = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

/// `streams` connections each send `bytes` and read them back at the same time.
/// Returns the wall time from the common start until the last byte came back.
pub fn bulk(addr: &str, streams: usize, bytes: usize) -> Result<Duration> {
    let start = Arc::new(Barrier::new(streams + 1));
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            let (addr, start) = (addr.to_owned(), start.clone());
            thread::spawn(move || -> Result<()> {
                let conn = connect(&addr);
                start.wait();
                let mut conn = conn?;
                let mut writer = conn.try_clone()?;
                let sender = thread::spawn(move || -> std::io::Result<()> {
                    let chunk = vec![0x5a_u8; CHUNK];
                    let mut left = bytes;
                    while left > 0 {
                        let n = left.min(CHUNK);
                        writer.write_all(&chunk[..n])?;
                        left -= n;
                    }
                    Ok(())
                });
                let mut buf = vec![0u8; CHUNK];
                let mut got = 0;
                while got < bytes {
                    let n = conn.read(&mut buf)?;
                    if n == 0 {
                        bail!("the echo closed after {got} of {bytes} bytes");
                    }
                    got += n;
                }
                sender.join().map_err(|_| anyhow!("sender panicked"))??;
                Ok(())
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for worker in workers {
        worker.join().map_err(|_| anyhow!("stream panicked"))??;
    }
    Ok(began.elapsed())
}

/// `conns` connections each send `per_conn` messages of `size` bytes, one at a time,
/// and wait for each echo. Returns every round trip.
pub fn round_trips(addr: &str, conns: usize, per_conn: usize, size: usize) -> Result<Vec<Duration>> {
    let start = Arc::new(Barrier::new(conns));
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, start) = (addr.to_owned(), start.clone());
            thread::spawn(move || -> Result<Vec<Duration>> {
                let conn = connect(&addr);
                let message = vec![0x42_u8; size];
                let mut back = vec![0u8; size];
                let warmed = conn.and_then(|mut conn| {
                    // The first message pays for the overlay dial; it is not a round trip.
                    conn.write_all(&message)?;
                    conn.read_exact(&mut back)?;
                    Ok(conn)
                });
                start.wait();
                let mut conn = warmed?;
                let mut times = Vec::with_capacity(per_conn);
                for _ in 0..per_conn {
                    let sent = Instant::now();
                    conn.write_all(&message)?;
                    conn.read_exact(&mut back)?;
                    times.push(sent.elapsed());
                }
                Ok(times)
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.join().map_err(|_| anyhow!("connection panicked"))??);
    }
    Ok(all)
}

/// `total` fresh connections, `parallel` at a time: connect, send one byte, read it back,
/// close. Returns the wall time and each connection's dial → first byte.
pub fn dials(addr: &str, total: usize, parallel: usize) -> Result<(Duration, Vec<Duration>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let (addr, next) = (addr.to_owned(), next.clone());
            thread::spawn(move || -> Result<Vec<Duration>> {
                let mut times = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let dialed = Instant::now();
                    let mut conn = connect(&addr)?;
                    conn.write_all(b"x")?;
                    let mut back = [0u8; 1];
                    conn.read_exact(&mut back).context("no first byte")?;
                    times.push(dialed.elapsed());
                }
                Ok(times)
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.join().map_err(|_| anyhow!("dialer panicked"))??);
    }
    Ok((began.elapsed(), all))
}

/// Opens `count` connections, each proven through to the host by one echoed byte, and
/// keeps them open (idle) until the returned streams are dropped.
pub fn idle(addr: &str, count: usize, parallel: usize) -> Result<Vec<TcpStream>> {
    let per = count.div_ceil(parallel.max(1));
    let workers: Vec<_> = (0..parallel)
        .map(|i| {
            let addr = addr.to_owned();
            let n = per.min(count.saturating_sub(i * per));
            thread::spawn(move || -> Result<Vec<TcpStream>> {
                (0..n)
                    .map(|_| {
                        let mut conn = connect(&addr)?;
                        conn.write_all(b"i")?;
                        let mut back = [0u8; 1];
                        conn.read_exact(&mut back)?;
                        Ok(conn)
                    })
                    .collect()
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for worker in workers {
        all.extend(worker.join().map_err(|_| anyhow!("opener panicked"))??);
    }
    Ok(all)
}

/// `conns` keep-alive HTTP/1.1 connections each GET `path` `per_conn` times (after one
/// warm-up request). Returns the wall time and every request's latency.
pub fn http_gets(addr: &str, path: &str, conns: usize, per_conn: usize) -> Result<(Duration, Vec<Duration>)> {
    let start = Arc::new(Barrier::new(conns + 1));
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, path, start) = (addr.to_owned(), path.to_owned(), start.clone());
            thread::spawn(move || -> Result<Vec<Duration>> {
                let request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n");
                let warmed = connect(&addr).and_then(|conn| {
                    let mut conn = BufReader::new(conn);
                    get(&mut conn, &request)?;
                    Ok(conn)
                });
                start.wait();
                let mut conn = warmed?;
                let mut times = Vec::with_capacity(per_conn);
                for _ in 0..per_conn {
                    let sent = Instant::now();
                    get(&mut conn, &request)?;
                    times.push(sent.elapsed());
                }
                Ok(times)
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.join().map_err(|_| anyhow!("HTTP client panicked"))??);
    }
    Ok((began.elapsed(), all))
}

/// One request on a keep-alive connection; the response must be a 200 with a length.
fn get(conn: &mut BufReader<TcpStream>, request: &str) -> Result<()> {
    conn.get_mut().write_all(request.as_bytes())?;
    let mut status = String::new();
    conn.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        bail!("not a 200: {:?}", status.trim_end());
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            bail!("the connection closed mid-response");
        }
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("content-length:") {
            length = Some(value.trim().parse::<usize>()?);
        }
    }
    let mut body = vec![0u8; length.context("a response without content-length")?];
    conn.read_exact(&mut body)?;
    Ok(())
}
