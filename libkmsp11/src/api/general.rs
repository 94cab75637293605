//! General-purpose functions (PKCS#11 3.0 §5.4).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kmsp11_proto::{Info, Version};

use super::{Global, GENERATION, STATE};
use crate::client::Client;
use crate::config::Config;
use crate::error::{Error, Result};

/// C_Initialize (§5.4): reads the configuration and builds the TLS client;
/// the first connection is made by the first call that needs kmsd.
pub fn initialize() -> Result<()> {
    log_to_stderr();
    let mut state = STATE.write();
    if let Some(g) = state.as_ref() {
        if g.pid == super::pid() {
            return Err(Error::AlreadyInitialized);
        }
        // Initialised in a parent before fork(): the parent's connections are
        // the parent's. Leave them untouched, never closed from here.
        if let Some(old) = state.take() {
            std::mem::forget(old);
        }
    }
    let (path, cfg) = Config::locate().map_err(|e| {
        eprintln!("libkmsp11: C_Initialize: {e}");
        Error::Config(e)
    })?;
    let client = Client::new(cfg).map_err(|e| {
        eprintln!("libkmsp11: C_Initialize: {}: {e}", path.display());
        Error::Config(e)
    })?;
    *state = Some(Arc::new(Global {
        pid: super::pid(),
        client: Arc::new(client),
    }));
    GENERATION.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// With `KMSP11_LOG` set (a filter such as `debug` or `kmsp11=trace`), the
/// library's events go to stderr. Installed once, and only if the host
/// application has no subscriber of its own.
fn log_to_stderr() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Some(filter) = std::env::var_os("KMSP11_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter.to_string_lossy()))
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .try_init();
        }
    });
}

/// C_Finalize (§5.4): ends the context at kmsd; open sessions close with it.
pub fn finalize() -> Result<()> {
    let g = {
        let mut state = STATE.write();
        match state.as_ref() {
            Some(g) if g.pid == super::pid() => {}
            _ => return Err(Error::NotInitialized),
        }
        GENERATION.fetch_add(1, Ordering::SeqCst);
        state.take()
    };
    if let Some(g) = g {
        g.client.goodbye();
    }
    Ok(())
}

/// C_GetInfo (§5.4): the library's own identity, answered locally.
pub fn info() -> Info {
    Info {
        cryptoki_version: Version {
            major: 2,
            minor: 40,
        },
        manufacturer_id: b"kmsp11".to_vec(),
        flags: 0,
        library_description: b"kmsp11 remote PKCS#11".to_vec(),
        library_version: Version { major: 0, minor: 1 },
    }
}
