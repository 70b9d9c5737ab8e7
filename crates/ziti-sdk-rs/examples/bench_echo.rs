//! The processes of `cargo xtask bench` built on this SDK: the same echo loop behind either
//! the overlay (hosting a service with this SDK) or a plain TCP listener (the benchmark's
//! limit line, and the app behind `ziti tunnel host`); a Rust dialer (a loopback TCP port
//! whose every connection is one [`ZitiContext::dial`], the counterpart of `ziti tunnel
//! proxy`); and the end-to-end encryption floor (seal + open of N MiB, nothing else).
//!
//! `bench_echo overlay IDENTITY.json SERVICE`, `bench_echo tcp 127.0.0.1:PORT`,
//! `bench_echo proxy IDENTITY.json SERVICE 127.0.0.1:PORT` or `bench_echo crypto-floor MIB`.
//! The servers print `ready` on stdout once they accept connections and stop on SIGTERM or
//! Ctrl-C; `crypto-floor` prints the CPU seconds per GiB and exits.

use std::process::ExitCode;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};
use ziti_sdk::{ZitiConn, ZitiContext};

/// Large enough that a bulk stream moves whole overlay payloads per read.
const COPY_BUFFER: usize = 64 * 1024;

/// The first read of a connection, before its copy buffer exists.
const FIRST_READ: usize = 1024;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let served = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["overlay", identity, service] => overlay(identity, service).await,
        ["tcp", addr] => tcp(addr).await,
        ["proxy", identity, service, addr] => proxy(identity, service, addr).await,
        ["crypto-floor", mib] => crypto_floor(mib),
        _ => {
            eprintln!(
                "usage: bench_echo overlay IDENTITY.json SERVICE | bench_echo tcp 127.0.0.1:PORT \
                 | bench_echo proxy IDENTITY.json SERVICE 127.0.0.1:PORT | bench_echo crypto-floor MIB"
            );
            return ExitCode::from(2);
        }
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench_echo: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn overlay(identity: &str, service: &str) -> Result<(), Box<dyn std::error::Error>> {
    let context = ZitiContext::from_file(identity).await?;
    let mut listener = context.listen(service).await?;
    listener.wait_bound(true).await;
    println!("ready");
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            conn = listener.accept() => { tokio::spawn(echo_overlay(conn?)); }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    listener.close().await;
    Ok(())
}

async fn tcp(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    serve_tcp(addr, echo).await
}

/// Every accepted TCP connection becomes one overlay dial, piped both ways until both sides close.
async fn proxy(identity: &str, service: &str, addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let context = ZitiContext::from_file(identity).await?;
    let service = service.to_owned();
    serve_tcp(addr, move |mut conn| {
        let (context, service) = (context.clone(), service.clone());
        async move {
            match context.dial(&service).await {
                Ok(mut overlay) => {
                    let _ = tokio::io::copy_bidirectional_with_sizes(&mut conn, &mut overlay, COPY_BUFFER, COPY_BUFFER)
                        .await;
                }
                Err(err) => eprintln!("bench_echo proxy: dialing {service}: {err}"),
            }
        }
    })
    .await
}

/// Accepts TCP connections on `addr` (Nagle off) and serves each in a task of its own,
/// until SIGTERM or Ctrl-C.
async fn serve_tcp<F, Served>(addr: &str, serve: F) -> Result<(), Box<dyn std::error::Error>>
where
    F: Fn(tokio::net::TcpStream) -> Served,
    Served: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("ready");
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let (conn, _) = conn?;
                conn.set_nodelay(true)?;
                tokio::spawn(serve(conn));
            }
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// What end-to-end encryption alone costs: every byte sealed once and opened once, as an
/// echo host does, with the SDK's secretstream (XChaCha20-Poly1305, dryoc) in chunks the
/// size of a bulk overlay payload. Prints process CPU seconds per GiB.
fn crypto_floor(mib: &str) -> Result<(), Box<dyn std::error::Error>> {
    use dryoc::classic::crypto_secretstream_xchacha20poly1305::{
        Header, State, crypto_secretstream_xchacha20poly1305_init_pull,
        crypto_secretstream_xchacha20poly1305_init_push, crypto_secretstream_xchacha20poly1305_pull,
        crypto_secretstream_xchacha20poly1305_push,
    };
    use dryoc::constants::{
        CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_ABYTES as OVERHEAD, CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_MESSAGE,
    };
    const CHUNK: usize = 32 * 1024;
    let mib: usize = mib.parse().map_err(|_| format!("crypto-floor: {mib:?} is not a number of MiB"))?;
    let key = [7u8; 32];
    let (mut push, mut pull) = (State::new(), State::new());
    let mut header: Header = Default::default();
    crypto_secretstream_xchacha20poly1305_init_push(&mut push, &mut header, &key);
    crypto_secretstream_xchacha20poly1305_init_pull(&mut pull, &header, &key);
    let plaintext = vec![0x5au8; CHUNK];
    let started = cpu_seconds();
    for _ in 0..(mib << 20) / CHUNK {
        // Fresh buffers per message, as the SDK's Sealer and Opener allocate them.
        let mut sealed = vec![0u8; CHUNK + OVERHEAD];
        crypto_secretstream_xchacha20poly1305_push(
            &mut push,
            &mut sealed,
            &plaintext,
            None,
            CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_MESSAGE,
        )?;
        let mut opened = vec![0u8; CHUNK];
        let mut tag = 0u8;
        crypto_secretstream_xchacha20poly1305_pull(&mut pull, &mut opened, &mut tag, &sealed, None)?;
        std::hint::black_box(&opened);
    }
    let per_gib = (cpu_seconds() - started) * 1024.0 / mib as f64;
    println!("{per_gib:.4}");
    Ok(())
}

/// This process's user + system CPU time, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // After the command: utime and stime are the 12th and 13th fields (proc(5)), in USER_HZ (100).
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Echoes an overlay connection with no buffer of its own: each received payload is
/// written back as it arrived ([`ZitiConn::read_chunk`]), so an idle connection costs
/// only what the SDK keeps for it.
async fn echo_overlay(mut conn: ZitiConn) {
    while let Ok(Some(payload)) = conn.read_chunk(usize::MAX).await {
        if conn.write_all(&payload).await.is_err() {
            break;
        }
    }
    let _ = conn.shutdown().await;
}

/// Echoes every byte back until the peer closes its side, then closes ours.
async fn echo(conn: impl AsyncRead + AsyncWrite + Unpin) {
    let (mut reader, mut writer) = tokio::io::split(conn);
    // The copy buffer is allocated only once bytes arrive: an idle connection (the bench
    // holds a thousand) then costs no 64 KiB buffer, only this small first read.
    let mut first = [0u8; FIRST_READ];
    let read = match reader.read(&mut first).await {
        Ok(0) | Err(_) => 0,
        Ok(read) => read,
    };
    if read > 0 && writer.write_all(&first[..read]).await.is_ok() {
        let mut reader = tokio::io::BufReader::with_capacity(COPY_BUFFER, reader);
        let _ = tokio::io::copy_buf(&mut reader, &mut writer).await;
    }
    let _ = writer.shutdown().await;
}
