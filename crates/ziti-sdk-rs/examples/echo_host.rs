//! Hosts an overlay service that echoes every byte back.
//!
//! `cargo run -p ziti-sdk-rs --example echo_host -- IDENTITY.json SERVICE`
//! (`RUST_LOG=debug` for protocol detail). Stops on Ctrl-C.

use std::process::ExitCode;

use tokio::io::AsyncWriteExt;
use ziti_sdk::ZitiContext;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [identity, service] = args.as_slice() else {
        eprintln!("usage: echo_host IDENTITY.json SERVICE");
        return ExitCode::from(2);
    };
    match run(identity, service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("echo_host: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(identity: &str, service: &str) -> Result<(), ziti_sdk::Error> {
    let context = ZitiContext::from_file(identity).await?;
    let mut listener = context.listen(service).await?;
    eprintln!("echo_host: {} hosting {service}", context.identity_name());
    loop {
        let conn = tokio::select! {
            conn = listener.accept() => conn?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let dialer = conn.dialer().and_then(|d| d.name()).unwrap_or("unknown").to_owned();
        tokio::spawn(async move {
            let (mut reader, mut writer) = tokio::io::split(conn);
            let copied = tokio::io::copy(&mut reader, &mut writer).await;
            let _ = writer.shutdown().await;
            tracing::debug!(%dialer, ?copied, "echo connection done");
        });
    }
}
