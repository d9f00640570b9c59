//! Authenticated listeners of the test broker (tests/support/broker.sh): SASL_SSL with
//! SCRAM-SHA-512 over TLS, and mutual TLS. The loader connects through each with the job
//! settings the README documents (the password from the environment, never in the job file);
//! a wrong password, a client certificate the broker does not trust, or a broker certificate
//! the loader does not trust end the run quickly with a clear error, a non-zero exit and
//! nothing committed; no secret appears in any log line, even at debug level.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

fn tls(file: &str) -> String {
    format!("{}/{file}", test_env("SLUICE_TEST_TLS_DIR"))
}

/// The job on the SASL_SSL listener; the password comes from `SASL_PASSWORD` in the
/// environment (`${SASL_PASSWORD:-}` in the job file: the test process reads the job too).
fn sasl_job(f: &mut Fixture, table: &str) {
    let job = f
        .job_file(table)
        .set("source", "brokers", test_env("SLUICE_TEST_SASL_BROKERS"))
        .set("source.properties", "security.protocol", "SASL_SSL")
        .set("source.properties", "sasl.mechanism", "SCRAM-SHA-512")
        .set(
            "source.properties",
            "sasl.username",
            test_env("SLUICE_TEST_SASL_USER"),
        )
        .set("source.properties", "sasl.password", "${SASL_PASSWORD:-}")
        .set("source.properties", "ssl.ca.location", tls("ca.pem"));
    f.write(table, &job);
}

fn mtls_job(f: &mut Fixture, table: &str, ca: &str, cert: &str, key: &str) {
    let job = f
        .job_file(table)
        .set("source", "brokers", test_env("SLUICE_TEST_MTLS_BROKERS"))
        .set("source.properties", "security.protocol", "SSL")
        .set("source.properties", "ssl.ca.location", tls(ca))
        .set("source.properties", "ssl.certificate.location", tls(cert))
        .set("source.properties", "ssl.key.location", tls(key));
    f.write(table, &job);
}

/// `sluice ARGS --job JOB` at debug level with `SASL_PASSWORD` set to `password`.
fn sluice_with(f: &Fixture, password: &str, args: &[&str]) -> Output {
    f.sluice()
        .env("SLUICE_LOG", "debug")
        .env("SASL_PASSWORD", password)
        .args(args)
        .arg("--job")
        .arg(&f.job)
        .output()
        .unwrap()
}

fn assert_refused(f: &Fixture, out: &Output, started: Instant, expect: &[&str]) {
    let t = output_text(out);
    assert!(!out.status.success(), "the run succeeded: {t}");
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        expect.iter().any(|e| t.contains(e)),
        "the error does not say what failed ({expect:?}): {t}"
    );
    assert!(
        t.contains("source.properties"),
        "the error names no setting: {t}"
    );
    assert_eq!(f.state().seq, 0, "something was committed");
}

#[test]
fn sasl_scram_over_tls_loads_and_a_wrong_password_commits_nothing() {
    let password = test_env("SLUICE_TEST_SASL_PASSWORD");
    let mut f = Fixture::new("sasl", 2);
    f.produce(spec(0, 5_000));

    // A wrong password: a clear error, quickly, nothing committed, neither password logged.
    sasl_job(&mut f, "table");
    let started = Instant::now();
    let out = sluice_with(&f, "not-the-password-7f3a", &["run", "--once"]);
    assert_refused(
        &f,
        &out,
        started,
        &["Authentication failed", "authentication"],
    );
    assert!(
        !output_text(&out).contains("not-the-password-7f3a"),
        "{}",
        output_text(&out)
    );
    // A continuous loader stops too (librdkafka alone would retry forever).
    let started = Instant::now();
    let out = sluice_with(&f, "not-the-password-7f3a", &["run"]);
    assert_refused(
        &f,
        &out,
        started,
        &["Authentication failed", "authentication"],
    );

    // The right one: everything loads once; status and verify --kafka work through it.
    let out = sluice_with(&f, &password, &["run", "--once"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        !output_text(&out).contains(&password),
        "the password was logged"
    );
    assert_exactly_once(&f.read(), 5_000, 0);
    for args in [&["status", "--json"][..], &["verify", "--kafka", "--json"]] {
        let out = sluice_with(&f, &password, args);
        assert!(out.status.success(), "{args:?}: {}", output_text(&out));
        assert!(
            !output_text(&out).contains(&password),
            "{args:?} logged the password"
        );
    }
    // The job file names the variable, not the secret.
    assert!(!std::fs::read_to_string(&f.job).unwrap().contains(&password));
}

#[test]
fn mutual_tls_loads_and_untrusted_certificates_commit_nothing() {
    let mut f = Fixture::new("mtls", 2);
    f.produce(spec(0, 5_000));

    // A client certificate from a CA the broker does not trust.
    mtls_job(
        &mut f,
        "table",
        "ca.pem",
        "rogue-client.pem",
        "rogue-client.key",
    );
    let started = Instant::now();
    let out = sluice_with(&f, "", &["run", "--once"]);
    assert_refused(&f, &out, started, &["SSL", "certificate"]);

    // A broker certificate the loader does not trust (it trusts only the rogue CA).
    mtls_job(&mut f, "table", "rogue-ca.pem", "client.pem", "client.key");
    let started = Instant::now();
    let out = sluice_with(&f, "", &["run", "--once"]);
    assert_refused(&f, &out, started, &["certificate verify failed", "SSL"]);

    // The right ones.
    mtls_job(&mut f, "table", "ca.pem", "client.pem", "client.key");
    let out = sluice_with(&f, "", &["run", "--once"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_exactly_once(&f.read(), 5_000, 0);
    // No key material in the logs.
    let key = std::fs::read_to_string(tls("client.key")).unwrap();
    let secret_line = key.lines().nth(1).unwrap();
    assert!(!output_text(&out).contains(secret_line));
}
