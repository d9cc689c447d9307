//! Load on the emulator, loopback only, bounded in time and request count:
//!
//! 1. 20 concurrent recovery drills: each downloads the security domain of a
//!    shared source instance (with status polls), recovers it with two
//!    custodian keys, takes the transfer key of its own target instance,
//!    uploads and polls until `Success`. No error is allowed.
//! 2. Status polls on the source instance from 4 keep-alive clients:
//!    at most 20,000 requests or 20 s; throughput and latency percentiles.
//! 3. Peak RSS of the source emulator process (VmHWM).
//!
//! Prints the figures and exits non-zero if a target is missed
//! (≥ 1,000 req/s, p99 < 20 ms, RSS < 50 MB, no drill error).
//! Run with `benches/emulator_load.sh` (or `cargo bench --bench emulator_load`).

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{percentile, rss_kb, serve, Served};
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::custodian::keygen;
use hsm_ceremony::emulator::{self, Role};
use hsm_ceremony::format::sdfile::SecurityDomain;
use hsm_ceremony::instance::InstanceClient;
use hsm_ceremony::recovery;
use rand::SeedableRng;

const DRILLS: usize = 20;
const POLL_CLIENTS: usize = 4;
const MAX_POLLS: usize = 20_000;
const POLL_BUDGET: Duration = Duration::from_secs(20);

fn client(s: &Served, roles: &[Role]) -> InstanceClient {
    let token = emulator::issue_token(&s.dir, "load", roles).unwrap();
    InstanceClient::new(&s.url, token, Some(&s.ca))
        .unwrap()
        .with_polling(Duration::from_secs(60), Duration::from_millis(20))
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let tmp = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let custodians: Vec<(rsa::PrivateKey, Certificate)> = (0..3)
        .map(|i| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(900 + i);
            let key = keygen::generate_key_with_rng(&mut rng, 2048).unwrap();
            let cert = keygen::self_signed_certificate_with_rng(&mut rng, &key, &format!("c{i}"), 30, now).unwrap();
            (key, cert)
        })
        .collect();
    let custodians = Arc::new(custodians);
    let certs: Vec<Certificate> = custodians.iter().map(|(_, c)| c.clone()).collect();

    let source = serve(&tmp.path().join("source"));
    let source_client = client(&source, &[Role::Administrator]);
    source_client.download(&certs, 2).unwrap();
    let targets: Vec<Served> = (0..DRILLS)
        .map(|i| serve(&tmp.path().join(format!("target{i}"))))
        .collect();

    // 1. Concurrent drills.
    let started = Instant::now();
    let mut handles = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let src = client(&source, &[Role::Administrator]);
        let dst = client(target, &[Role::Administrator]);
        let certs = certs.clone();
        let custodians = custodians.clone();
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let sd_json = src.download(&certs, 2).map_err(|e| e.to_string())?;
            for _ in 0..5 {
                src.download_status().map_err(|e| e.to_string())?;
            }
            let sd = SecurityDomain::from_json(sd_json.as_bytes()).map_err(|e| e.to_string())?;
            let mut q = recovery::Quorum::new(&sd);
            for (n, (key, _)) in custodians.iter().take(2).enumerate() {
                q.add(&recovery::CustodianKey::from_rsa(format!("c{n}"), key.clone(), None))
                    .map_err(|e| e.to_string())?;
            }
            let items = q.finish().map_err(|e| e.to_string())?.items;
            let exchange = dst.transfer_key().map_err(|e| e.to_string())?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + i as u64);
            let blob = recovery::build_restore_blob_with_rng(&mut rng, &items, &exchange).map_err(|e| e.to_string())?;
            dst.upload(&blob).map_err(|e| e.to_string())?;
            Ok(())
        }));
    }
    let errors: Vec<String> = handles.into_iter().filter_map(|h| h.join().unwrap().err()).collect();
    let drill_time = started.elapsed();
    for e in &errors {
        eprintln!("drill error: {e}");
    }
    drop(targets);

    // 2. Status-poll throughput and latency.
    let url = format!("{}/securitydomain/download/pending?api-version=7.5", source.url);
    let token = emulator::issue_token(&source.dir, "poller", &[Role::Administrator])
        .unwrap()
        .reveal();
    let ca = std::fs::read(&source.ca).unwrap();
    let deadline = Instant::now() + POLL_BUDGET;
    let poll_started = Instant::now();
    let mut pollers = Vec::new();
    for _ in 0..POLL_CLIENTS {
        let (url, token, ca) = (url.clone(), token.clone(), ca.clone());
        pollers.push(std::thread::spawn(move || -> (Vec<Duration>, usize) {
            let root = ureq::tls::Certificate::from_pem(&ca).unwrap();
            let tls = ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
                .build();
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .tls_config(tls)
                .http_status_as_error(false)
                .proxy(None)
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into();
            let bearer = format!("Bearer {token}");
            let mut lat = Vec::with_capacity(MAX_POLLS / POLL_CLIENTS);
            let mut errors = 0;
            while lat.len() < MAX_POLLS / POLL_CLIENTS && Instant::now() < deadline {
                let t = Instant::now();
                match agent.get(&url).header("Authorization", &bearer).call() {
                    Ok(mut r) if r.status() == 200 => {
                        let body = r.body_mut().read_to_string().unwrap_or_default();
                        if !body.contains("\"Success\"") {
                            errors += 1;
                        }
                    }
                    _ => errors += 1,
                }
                lat.push(t.elapsed());
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut poll_errors = 0;
    for p in pollers {
        let (lat, errs) = p.join().unwrap();
        latencies.extend(lat);
        poll_errors += errs;
    }
    let poll_time = poll_started.elapsed();
    latencies.sort();
    let rate = latencies.len() as f64 / poll_time.as_secs_f64();
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);

    // 3. Memory of the source emulator.
    let pid = source.child.id();
    let hwm = rss_kb(pid, "VmHWM:");
    let rss = rss_kb(pid, "VmRSS:");

    println!(
        "drills: {DRILLS} concurrent, {} failed, {:.2} s",
        errors.len(),
        drill_time.as_secs_f64()
    );
    println!(
        "status polls: {} requests from {POLL_CLIENTS} clients in {:.2} s = {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {poll_errors} errors",
        latencies.len(),
        poll_time.as_secs_f64(),
        rate,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!(
        "emulator memory: RSS {:.1} MB now, peak {:.1} MB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let mut missed = Vec::new();
    if !errors.is_empty() || poll_errors > 0 {
        missed.push("errors".to_string());
    }
    if rate < 1000.0 {
        missed.push(format!("{rate:.0} req/s < 1000"));
    }
    if p99 >= Duration::from_millis(20) {
        missed.push(format!("p99 {:.2} ms >= 20 ms", p99.as_secs_f64() * 1e3));
    }
    if hwm >= 50 * 1024 {
        missed.push(format!("peak RSS {:.1} MB >= 50 MB", hwm as f64 / 1024.0));
    }
    // exit() skips destructors: stop the emulator first, or it outlives the run.
    drop(source);
    if missed.is_empty() {
        println!("all targets met");
    } else {
        println!("targets missed: {}", missed.join("; "));
        std::process::exit(1);
    }
}
