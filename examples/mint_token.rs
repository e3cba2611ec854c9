//! Mints a console token the way a lab backend does (the Python `generate_auth_token`), using
//! `proxy-auth` alone, and prints the URL path a browser opens on `ws-proxy`.
//!
//! ```text
//! SECRET_KEY=... [TOKEN_TTL_SECONDS=3600] cargo run -p ws-proxy-examples --example mint_token -- [namespace] [vm ...]
//! ```
//!
//! Defaults: namespace `pentest-ubuntu-3-9`, VM `ubuntu`, ten minutes of validity (the Python
//! default; `TOKEN_TTL_SECONDS` sets another). The expiry is printed on stderr, the paths on
//! stdout.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_auth::{Expiry, LabInstance, SigningKey, Verifier, issue};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mint_token: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("SECRET_KEY").map_err(|_| "set SECRET_KEY to the proxy's secret")?;
    let mut args = std::env::args().skip(1);
    let namespace = args
        .next()
        .unwrap_or_else(|| "pentest-ubuntu-3-9".to_owned());
    let lifetime = match std::env::var("TOKEN_TTL_SECONDS") {
        Ok(seconds) => Duration::from_secs(
            seconds
                .trim()
                .parse()
                .map_err(|_| format!("TOKEN_TTL_SECONDS {seconds:?} is not a whole number"))?,
        ),
        Err(_) => Duration::from_secs(600),
    };
    let mut vm_names: Vec<String> = args.collect();
    if vm_names.is_empty() {
        vm_names.push("ubuntu".to_owned());
    }

    // What the lab backend knows about the user's lab instance.
    let user_id = 5;
    let lab_instance = LabInstance::new(1, 9, namespace, vm_names.clone())
        .with_additional_data(serde_json::json!({"view_only": false}));
    let token = issue(
        user_id,
        lab_instance,
        Expiry::In(lifetime),
        &SigningKey::hs256(&secret)?,
    )?;

    // The proxy's side of the contract, to show the token is accepted.
    let grant = Verifier::hs256(&secret)?.verify(&token, &vm_names[0])?;
    let expires_in = grant
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let expires_at = grant
        .expires_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "token for user {} opens {}/{} (and {} more VMs); valid for {} s, until unix time {}",
        grant.user_id,
        grant.namespace,
        grant.vmi_name,
        vm_names.len() - 1,
        (expires_in + Duration::from_millis(500)).as_secs(),
        expires_at.as_secs()
    );
    for vm_name in &vm_names {
        println!("/{token}/{vm_name}");
    }
    Ok(())
}
