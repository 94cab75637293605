//! A sequence of requests, decoded and run through kmsd's pipeline
//! (resolve, policy, audit, the operations) over a real SoftHSM token (a
//! dev-mode setup made once per fuzzing process, as its admin identity),
//! on a fresh client context each time. Under `cfg(fuzzing)` kmsd numbers
//! sessions and objects from 0x10001, so inputs can name them.
#![no_main]

use std::sync::{Arc, OnceLock};

use kmsd::core::pipeline::{Origin, Pipeline};
use kmsd::daemon::{Daemon, Identity};
use kmsp11_proto::{decode, Request};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    daemon: Daemon,
    identity: Arc<Identity>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kmsp11-fuzz-{}", std::process::id()));
        let cfg =
            kmsd::dev::setup(&dir, "127.0.0.1:0").expect("dev setup (is softhsm2 installed?)");
        let mut cfg = kmsd::config::Config::load(&cfg).expect("dev config");
        // Records are written, without waiting for the disk.
        cfg.audit.fsync = kmsd::audit::log::Fsync::Off;
        let daemon = Daemon::start(&cfg).expect("kmsd over SoftHSM");
        let identity = daemon.identities()[0].clone();
        Fixture { daemon, identity }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(requests) = decode::<Vec<Request>>(data) else {
        return;
    };
    let f = fixture();
    let Some((ctx, _)) = f.daemon.open_context(&f.identity, None, 0) else {
        return;
    };
    let pipeline = Pipeline {
        daemon: &f.daemon,
        ctx: &ctx,
    };
    for (i, r) in requests.into_iter().take(16).enumerate() {
        let origin = Origin {
            request_id: i as u64 + 1,
            peer: ([127, 0, 0, 1], 1).into(),
            audited: true,
        };
        let _ = pipeline.run(r, origin);
    }
    f.daemon.end_context(&ctx);
    ctx.detach();
});
