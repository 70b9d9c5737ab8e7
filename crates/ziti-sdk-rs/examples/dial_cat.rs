//! Dials an overlay service and pipes stdin to it and its answers to stdout (like
//! `ziti demo zcat`): `cargo run -p ziti-sdk-rs --example dial_cat -- IDENTITY.json SERVICE`.

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
        eprintln!("usage: dial_cat IDENTITY.json SERVICE");
        return ExitCode::from(2);
    };
    match run(identity, service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dial_cat: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(identity: &str, service: &str) -> Result<(), Box<dyn std::error::Error>> {
    let context = ZitiContext::from_file(identity).await?;
    let conn = context.dial(service).await?;
    let (mut reader, mut writer) = tokio::io::split(conn);
    let send = async {
        tokio::io::copy(&mut tokio::io::stdin(), &mut writer).await?;
        writer.shutdown().await
    };
    let receive = async {
        let mut stdout = tokio::io::stdout();
        tokio::io::copy(&mut reader, &mut stdout).await?;
        stdout.flush().await
    };
    let (sent, received) = tokio::join!(send, receive);
    sent?;
    received?;
    Ok(())
}
