//! The echo host of `cargo xtask bench`: the same echo loop behind either the overlay
//! (hosting a service with this SDK) or a plain TCP listener (the benchmark's limit line).
//!
//! `bench_echo overlay IDENTITY.json SERVICE` or `bench_echo tcp 127.0.0.1:PORT`.
//! Prints `ready` on stdout once it accepts connections; stops on SIGTERM or Ctrl-C.

use std::process::ExitCode;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};
use ziti_sdk::ZitiContext;

/// Large enough that a bulk stream moves whole overlay payloads per read.
const COPY_BUFFER: usize = 64 * 1024;

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
        _ => {
            eprintln!("usage: bench_echo overlay IDENTITY.json SERVICE | bench_echo tcp 127.0.0.1:PORT");
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
            conn = listener.accept() => { tokio::spawn(echo(conn?)); }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    listener.close().await;
    Ok(())
}

async fn tcp(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("ready");
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let (conn, _) = conn?;
                conn.set_nodelay(true)?;
                tokio::spawn(echo(conn));
            }
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Echoes every byte back until the peer closes its side, then closes ours.
async fn echo(conn: impl AsyncRead + AsyncWrite + Unpin) {
    let (reader, mut writer) = tokio::io::split(conn);
    let mut reader = tokio::io::BufReader::with_capacity(COPY_BUFFER, reader);
    let _ = tokio::io::copy_buf(&mut reader, &mut writer).await;
    let _ = writer.shutdown().await;
}
