//! The integration-test harness: runs the real `hsm-ceremony` binary in a
//! temporary directory of its own, captures what it says and how it exits,
//! and checks the files it leaves behind. Also owns the custodian set shared
//! by every test of one test binary (RSA generation is the slow part).

#![allow(dead_code)]

pub mod pty;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const BIN: &str = env!("CARGO_BIN_EXE_hsm-ceremony");

/// Exit codes, as documented in `hsm-ceremony --help`.
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INPUT: i32 = 3;
pub const EXIT_INTEGRITY: i32 = 4;
pub const EXIT_QUORUM: i32 = 5;

/// The real security domain downloaded from Azure (see fixtures/azure/README.md).
pub const AZURE_SD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/azure/sdfile.json");

/// The fixture's three x5t_256 values, in share order.
pub const AZURE_X5T: [&str; 3] = [
    "vODZF4xDVWHyFob2nfI5Li1MPOmEhVJqlnojTK_HuYg",
    "qBJlg1j1agy88BfSg_iZhAfHSBWxmbzW84zr1tv4QiM",
    "IqNczYeUNDRJ4XnvwsMw6JZW3lk-czwnTZ1HE5r6TIc",
];

/// What one run of the binary did.
#[derive(Debug)]
pub struct Output {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    fn describe(&self) -> String {
        format!(
            "hsm-ceremony {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// Requires exit code 0; returns self for chaining.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success\n{}", self.describe());
        self
    }

    /// Requires exit code `code` and every needle in stderr.
    #[track_caller]
    pub fn fails(&self, code: i32, needles: &[&str]) -> &Self {
        assert_eq!(self.code, code, "expected exit code {code}\n{}", self.describe());
        assert!(self.stderr.contains("error"), "no error printed\n{}", self.describe());
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}\n{}", self.describe());
        }
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.describe()
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.describe()
        );
        self
    }

    #[track_caller]
    pub fn stderr_lacks(&self, needle: &str) -> &Self {
        assert!(
            !self.stderr.contains(needle),
            "stderr has {needle:?}\n{}",
            self.describe()
        );
        self
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.describe()))
    }
}

/// A temporary directory a test runs the binary in; removed when dropped.
pub struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new(test: &str) -> Dir {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("hsm-ceremony-test-{test}-"))
            .tempdir()
            .expect("a temporary directory");
        Dir { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Runs the binary with `args` in this directory: no terminal on stdin and
    /// no passphrase in the environment, so nothing can be prompted for.
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Output {
        self.run_with(args, |_| {})
    }

    /// Like [`Dir::run`], after `setup` adjusts the command.
    pub fn run_with<S: AsRef<str>>(&self, args: &[S], setup: impl FnOnce(&mut Command)) -> Output {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .current_dir(self.path())
            .env_remove("HSM_CEREMONY_PASSPHRASE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        setup(&mut cmd);
        let out = cmd.output().expect("the hsm-ceremony binary runs");
        Output {
            args,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    /// Writes a passphrase, PIN or token file, readable by its owner only
    /// (the tool refuses such files that others can read).
    pub fn write_secret(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.write(name, bytes);
        set_mode(&p, 0o600);
        p
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.join(name)).unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
    }

    pub fn read_string(&self, name: &str) -> String {
        String::from_utf8(self.read(name)).unwrap()
    }

    pub fn remove(&self, name: &str) {
        fs::remove_file(self.join(name)).unwrap_or_else(|e| panic!("cannot remove {name}: {e}"));
    }

    pub fn exists(&self, name: &str) -> bool {
        self.join(name).exists()
    }

    pub fn chmod(&self, name: &str, mode: u32) {
        set_mode(&self.join(name), mode);
    }

    pub fn mode(&self, name: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(self.join(name)).unwrap().permissions().mode() & 0o777
    }

    /// Copies shared fixture files here, keeping their modes (keys stay 0600).
    pub fn copy(&self, names: &[&str]) {
        let from = fixtures().dir();
        for name in names {
            let src = from.join(name);
            fs::copy(&src, self.join(name)).unwrap_or_else(|e| panic!("cannot copy fixture {name}: {e}"));
            set_mode(&self.join(name), mode_of(&src));
        }
    }

    /// Copies custodian `i`'s key, certificate and passphrase file (`cI.*`).
    pub fn custodian(&self, i: usize) {
        self.copy(&[&format!("c{i}.key"), &format!("c{i}.cer"), &format!("c{i}.pass")]);
    }

    /// The shared 2-of-3 security domain (c0, c1, c2) as `sd.json`, with the
    /// exchange key pair and custodians c0..c2.
    pub fn ceremony(&self) {
        self.copy(&["sd.json", "exchange.cer", "exchange.key"]);
        for i in 0..3 {
            self.custodian(i);
        }
    }

    /// Names of the files in this directory, sorted.
    pub fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Requires that `name` was not created and that no temporary output
    /// (`.hsm-ceremony-*.tmp`) is left behind.
    #[track_caller]
    pub fn assert_absent(&self, name: &str) {
        assert!(
            !self.join(name).exists(),
            "{name} was left behind; files: {:?}",
            self.listing()
        );
        self.assert_no_temp();
    }

    #[track_caller]
    pub fn assert_no_temp(&self) {
        let temps: Vec<String> = self
            .listing()
            .into_iter()
            .filter(|n| n.starts_with(".hsm-ceremony-") && n.ends_with(".tmp"))
            .collect();
        assert!(temps.is_empty(), "temporary files left behind: {temps:?}");
    }

    /// Requires the directory to hold exactly `names` (nothing more).
    #[track_caller]
    pub fn assert_files(&self, names: &[&str]) {
        let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(self.listing(), want, "unexpected files in the test directory");
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `restore-blob` of `sd.json` for `exchange.cer` into `out` with `keys`
/// and a `--passphrase-file` for each of `pass_files` (none: prompted for).
pub fn restore_blob_args(keys: &[&str], pass_files: &[&str], out: &str) -> Vec<String> {
    let mut args = vec![
        "restore-blob",
        "--sd-file",
        "sd.json",
        "--sd-exchange-key",
        "exchange.cer",
        "--sd-wrapping-keys",
    ];
    args.extend_from_slice(keys);
    for p in pass_files {
        args.extend(["--passphrase-file", p]);
    }
    args.extend(["--out", out]);
    args.into_iter().map(String::from).collect()
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Scans the package's `src/` files whose path (as `src/...`) `scan`
/// accepts: how many were scanned, and every line naming one of `names`,
/// as `path:line: name: text`.
pub fn src_lines_naming(scan: impl Fn(&str) -> bool, names: &[&str]) -> (usize, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut scanned = 0;
    let mut found = Vec::new();
    for f in rust_files(&root.join("src")) {
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        if !scan(&rel) {
            continue;
        }
        scanned += 1;
        for (n, line) in fs::read_to_string(&f).unwrap().lines().enumerate() {
            if let Some(name) = names.iter().find(|name| line.contains(*name)) {
                found.push(format!("{rel}:{}: {name}: {}", n + 1, line.trim()));
            }
        }
    }
    (scanned, found)
}

/// The custodian passphrases of the shared set (distinct, ≥ 12 characters).
pub fn passphrase(i: usize) -> String {
    format!("custodian {i} correct horse battery staple")
}

/// Files generated once per test binary, with the real binary:
///
/// - `c0..c4.key` / `.cer`: 2048-bit custodians, keys encrypted with
///   [`passphrase`]`(i)`, which is also in `cI.pass`;
/// - `sd.json`: a 2-of-3 security domain split to c0, c1, c2 with random contents;
/// - `exchange.key` / `.cer`: an unencrypted 2048-bit exchange key pair.
pub struct Fixtures {
    dir: PathBuf,
    pub x5t: Vec<String>,
}

impl Fixtures {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub fn fixtures() -> &'static Fixtures {
    static CELL: OnceLock<Fixtures> = OnceLock::new();
    CELL.get_or_init(make_fixtures)
}

fn make_fixtures() -> Fixtures {
    // Under target/tmp, one folder per process; folders of finished runs are removed.
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    remove_stale_fixtures(&root);
    let dir = root.join(format!("hsm-ceremony-fixtures-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let runner = Dir {
        tmp: tempfile::tempdir().unwrap(),
    };
    let run = |args: &[&str]| {
        let mut full = args.to_vec();
        let out_dir = dir.to_str().unwrap();
        full.extend(["--out-dir", out_dir]);
        runner.run(&full).ok();
    };
    let mut pass_args = Vec::new();
    for i in 0..5 {
        let p = dir.join(format!("c{i}.pass"));
        fs::write(&p, format!("{}\n", passphrase(i))).unwrap();
        set_mode(&p, 0o600);
        pass_args.push("--passphrase-file".to_string());
        pass_args.push(p.to_str().unwrap().to_string());
    }
    let mut keygen = vec![
        "custodian",
        "keygen",
        "--count",
        "5",
        "--prefix",
        "c",
        "--bits",
        "2048",
        "--json",
    ];
    keygen.extend(pass_args.iter().map(String::as_str));
    run(&keygen);
    run(&[
        "custodian",
        "keygen",
        "--name",
        "exchange",
        "--bits",
        "2048",
        "--insecure-unencrypted-key",
    ]);
    let d = |n: &str| dir.join(n).to_str().unwrap().to_string();
    runner
        .run(&[
            "sd",
            "split",
            "--certs",
            &d("c0.cer"),
            &d("c1.cer"),
            &d("c2.cer"),
            "--quorum",
            "2",
            "--random-contents",
            "--out",
            &d("sd.json"),
        ])
        .ok();
    let x5t = (0..5)
        .map(|i| {
            let der = pem_der(&fs::read_to_string(dir.join(format!("c{i}.cer"))).unwrap());
            b64u(&sha256(&der))
        })
        .collect();
    Fixtures { dir, x5t }
}

fn remove_stale_fixtures(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("hsm-ceremony-fixtures-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// The DER inside the first PEM block of `text`.
pub fn pem_der(text: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.contains(':'))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .expect("PEM body is base64")
}

pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

pub fn b64u(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64u_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

/// Reads `path` as JSON.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Replaces part `part` (0..5) of a compact JWE with `f` applied to its bytes.
pub fn mutate_jwe(jwe: &str, part: usize, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut parts: Vec<String> = jwe.split('.').map(String::from).collect();
    let mut bytes = b64u_decode(&parts[part]);
    f(&mut bytes);
    parts[part] = b64u(&bytes);
    parts.join(".")
}

/// Runs `openssl` with `args` in `dir` and returns its stdout; fails the test
/// (never skips it) when OpenSSL is missing or refuses.
pub fn openssl(dir: &Dir, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("these tests need the `openssl` command on PATH, and it could not be run: {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `out`: a self-signed certificate for custodian `i`'s RSA modulus
/// under another public exponent (the first odd one from 3 coprime to
/// φ(n)), as one person would make to hold two shares. `cI.key` must be here.
pub fn twin_certificate(dir: &Dir, i: usize, out: &str) {
    use hsm_ceremony::crypto::secret::Passphrase;
    use hsm_ceremony::custodian::key::KeyFile;
    use rand::SeedableRng;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let key = KeyFile::parse(&dir.read(&format!("c{i}.key")))
        .unwrap()
        .into_key(Some(&Passphrase::new(passphrase(i))))
        .unwrap();
    let p: rsa::BoxedUint = key.primes()[0].as_ref().clone();
    let q: rsa::BoxedUint = key.primes()[1].as_ref().clone();
    let twin = (3u64..)
        .step_by(2)
        .find_map(|e| rsa::PrivateKey::from_p_q(p.clone(), q.clone(), rsa::BoxedUint::from(e)).ok())
        .unwrap();
    assert!(twin.n() == key.n() && twin.e() != key.e());
    let cert = hsm_ceremony::custodian::keygen::self_signed_certificate_with_rng(
        &mut rand::rngs::StdRng::seed_from_u64(7),
        &twin,
        "twin",
        365,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    dir.write(out, cert.to_pem());
}

/// Issues an administrator and crypto-user token for the instance in
/// `state` into `file` (0600, as token files must be).
pub fn admin_token(dir: &Dir, state: &str, file: &str) {
    let out = dir.run(&[
        "emulator",
        "token",
        "--state",
        state,
        "--principal",
        "ops",
        "--role",
        "administrator",
        "--role",
        "crypto-user",
    ]);
    out.ok();
    dir.write(file, out.stdout.trim());
    dir.chmod(file, 0o600);
}

/// `hsm-ceremony emulator serve` as a child on the state folder `state`
/// (relative to `dir`), with an administrator and crypto-user token in
/// `STATE.token`; killed on drop. An uploaded security domain lives in the
/// serving process only, so an upload and what needs it go to one of these.
pub struct Served {
    child: std::process::Child,
    pub url: String,
    pub ca: String,
    /// `--url URL --ca CA --token-file STATE.token`.
    pub connect: Vec<String>,
}

impl Served {
    pub fn start(dir: &Dir, state: &str) -> Served {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(BIN)
            .args(["--no-log", "emulator", "serve", "--state", state])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut url, mut ca) = (None, None);
        while url.is_none() || ca.is_none() {
            let line = lines.next().expect("the emulator printed its URL and CA").unwrap();
            if let Some(u) = line.strip_prefix("listening on ") {
                url = Some(u.trim().to_string());
            } else if let Some(c) = line.strip_prefix("CA certificate: ") {
                ca = Some(c.trim().to_string());
            }
        }
        let token_file = format!("{state}.token");
        admin_token(dir, state, &token_file);
        let (url, ca) = (url.unwrap(), ca.unwrap());
        let connect = ["--url", &url, "--ca", &ca, "--token-file", &token_file]
            .map(String::from)
            .to_vec();
        Served {
            child,
            url,
            ca,
            connect,
        }
    }

    /// Runs `args` (a command and its subcommand first) against this instance.
    pub fn run(&self, d: &Dir, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.splice(2..2, self.connect.iter().cloned());
        d.run(&all)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
