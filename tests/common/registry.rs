//! A schema registry for a test (Apicurio Registry, started by tests/support/registry.sh), and
//! a test CA with a server certificate for an https:// one.

use std::path::PathBuf;
use std::process::Command;

use super::repo;

/// A schema registry for one test: stopped when dropped.
pub struct Registry {
    dir: tempfile::TempDir,
    pub url: String,
    pub auth: Option<String>,
    /// The CA of an https:// registry.
    pub ca: Option<PathBuf>,
}

/// A test CA and a server certificate for 127.0.0.1 it signed (openssl).
pub struct Tls {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    pub fn new() -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sluice test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Tls {
            ca: p("ca.pem"),
            cert: p("cert.pem"),
            key: p("key.pem"),
            _dir: dir,
        }
    }
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(None, None)
    }

    /// With `user:password`, every request must carry them (basic auth); with `tls`, HTTPS.
    pub fn start_with(auth: Option<&str>, tls: Option<&Tls>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Command::new(repo().join("tests/support/registry.sh"));
        c.arg("start").arg(dir.path());
        if let Some(a) = auth {
            c.env("REGISTRY_BASIC_AUTH", a);
        }
        if let Some(t) = tls {
            c.env("REGISTRY_TLS_CERT", &t.cert)
                .env("REGISTRY_TLS_KEY", &t.key);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Registry {
            dir,
            url,
            auth: auth.map(String::from),
            ca: tls.map(|t| t.ca.clone()),
        }
    }

    pub fn pid(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pid"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // `stop` resumes a registry a test left SIGSTOPped before stopping it.
        let _ = Command::new(repo().join("tests/support/registry.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
