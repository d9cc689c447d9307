//! Serving: binds a loopback socket, speaks HTTP/1.1 over TLS (plain HTTP
//! only when asked), and runs either in the foreground ([`serve_blocking`])
//! or on a background thread with its own runtime ([`spawn`]).

use std::convert::Infallible;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::oneshot;

use super::authority::Authority;
use super::backup::Jobs;
use super::handle::{self, App, Site};
use super::keys::KeyStore;
use super::rbac::Authenticator;
use super::state::{self, Instance};
use super::tls;
use crate::error::{EmulatorError, Error, InstanceError, Result};

/// How to run one emulated instance.
#[derive(Clone, Debug)]
pub struct Config {
    /// The instance: its state, tokens, keys and TLS identity.
    pub state_dir: PathBuf,
    /// Must be a loopback address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// HTTPS (the default). Plain HTTP is for tests that ask for it.
    pub tls: bool,
    /// Tenant named in the challenge's `authorization` URL.
    pub tenant: String,
    /// How long a request body may take once its headers are in.
    pub body_timeout: Duration,
    /// Connections served at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Sets the instance's purge protection (kept in its state); `None`
    /// leaves it as stored (on for a new instance).
    pub purge_protection: Option<bool>,
}

/// Defaults of [`Config`]: generous for the SDKs, bounded for anything else.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_CONNECTIONS: usize = 64;

impl Config {
    /// HTTPS on 127.0.0.1, ephemeral port.
    pub fn new(state_dir: impl Into<PathBuf>) -> Config {
        Config {
            state_dir: state_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: true,
            tenant: "00000000-0000-0000-0000-000000000000".into(),
            body_timeout: BODY_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            purge_protection: None,
        }
    }
}

/// Where a started emulator can be reached.
#[derive(Clone, Debug)]
pub struct Ready {
    /// `https://127.0.0.1:PORT` (or `http://` without TLS).
    pub url: String,
    pub local_addr: SocketAddr,
    /// The CA certificate clients must trust (TLS only).
    pub ca_pem_path: Option<PathBuf>,
}

struct Prepared {
    app: Arc<App>,
    /// The Entra-compatible sign-in endpoints az needs (`authority.rs`).
    authority: Arc<Authority>,
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ready: Ready,
    _lock: File,
}

/// Holds the state directory exclusively: two servers on one instance would
/// overwrite each other's state.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(EmulatorError::AlreadyServed { dir: dir.to_path_buf() }.into()),
    }
}

/// The instance's state, keys and tokens, with the state folder locked.
fn open_app(config: &Config, origin: String, scheme: &'static str, port: u16) -> Result<(Arc<App>, File)> {
    state::ensure_dir(&config.state_dir)?;
    let lock = lock_dir(&config.state_dir)?;
    let mut instance = Instance::open(&config.state_dir)?;
    if let Some(on) = config.purge_protection {
        instance.set_purge_protection(on)?;
    }
    let app = Arc::new(App::new(
        instance,
        KeyStore::open(&config.state_dir)?,
        Authenticator::open(&config.state_dir)?,
        Jobs::open(&config.state_dir)?,
        Site {
            bound_origin: origin,
            scheme,
            port,
            tenant: config.tenant.clone(),
            body_timeout: config.body_timeout,
        },
    ));
    Ok((app, lock))
}

fn prepare(config: &Config) -> Result<Prepared> {
    if !config.listen.ip().is_loopback() {
        return Err(EmulatorError::NotLoopback(config.listen.to_string()).into());
    }
    state::ensure_dir(&config.state_dir)?;
    // An absolute CA path stays valid for clients started elsewhere.
    let dir = std::path::absolute(&config.state_dir).unwrap_or_else(|_| config.state_dir.clone());
    let material = if config.tls {
        Some(tls::load_or_create(&dir)?)
    } else {
        None
    };
    let listener = std::net::TcpListener::bind(config.listen).map_err(|source| EmulatorError::Listen {
        addr: config.listen.to_string(),
        source,
    })?;
    listener.set_nonblocking(true).map_err(|source| EmulatorError::Listen {
        addr: config.listen.to_string(),
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| EmulatorError::Listen {
        addr: config.listen.to_string(),
        source,
    })?;
    let scheme = if config.tls { "https" } else { "http" };
    let url = format!("{scheme}://{local_addr}");
    let (app, lock) = open_app(config, url.clone(), scheme, local_addr.port())?;
    // For `emulator az-setup`; written under the lock, so it names this server.
    super::az_setup::record_url(&config.state_dir, &url)?;
    let ready = Ready {
        url,
        local_addr,
        ca_pem_path: material.as_ref().map(|m| m.ca_pem_path.clone()),
    };
    let tls = material.map(|m| tokio_rustls::TlsAcceptor::from(m.config));
    let authority = Arc::new(Authority::new(
        Some(dir),
        config.tenant.clone(),
        ready.url.clone(),
        scheme,
        local_addr.port(),
        config.body_timeout,
    ));
    Ok(Prepared {
        app,
        authority,
        listener,
        tls,
        ready,
        _lock: lock,
    })
}

/// The origin an in-process instance names itself by (key ids, status URLs).
pub const IN_PROCESS_ORIGIN: &str = "http://in-process.invalid";

/// An emulated instance inside this process that opens no socket at all:
/// each request travels over an in-memory HTTP/1.1 connection to the same
/// handler a served instance uses, so routing, authentication and state are
/// identical. This is what `drill --instance local` and `demo` use, so they
/// work with no network interface, not even loopback.
pub struct InProcess {
    app: Arc<App>,
    runtime: tokio::runtime::Runtime,
    state_dir: Option<PathBuf>,
    _lock: Option<File>,
}

impl InProcess {
    /// The instance whose state is in `state_dir` (`local:DIR`), locked
    /// while this lives.
    pub fn open(state_dir: impl Into<PathBuf>) -> Result<InProcess> {
        let config = Config::new(state_dir);
        let (app, lock) = open_app(&config, IN_PROCESS_ORIGIN.into(), "http", 0)?;
        Ok(InProcess {
            app,
            runtime: runtime()?,
            state_dir: Some(config.state_dir),
            _lock: Some(lock),
        })
    }

    /// A fresh provisioned instance with no state folder: its life cycle,
    /// key store and tokens are in this process's memory and nothing of it
    /// is ever written (what `drill --instance local` recovers into, since
    /// what it receives is the production security domain's contents).
    pub fn in_memory() -> Result<InProcess> {
        let config = Config::new(PathBuf::new());
        let app = Arc::new(App::new(
            Instance::in_memory(),
            KeyStore::in_memory(),
            Authenticator::in_memory(),
            Jobs::in_memory(),
            Site {
                bound_origin: IN_PROCESS_ORIGIN.into(),
                scheme: "http",
                port: 0,
                tenant: config.tenant,
                body_timeout: config.body_timeout,
            },
        ));
        Ok(InProcess {
            app,
            runtime: runtime()?,
            state_dir: None,
            _lock: None,
        })
    }

    /// The state folder; `None` for an in-memory instance.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// Issues a token for `principal`. An in-memory instance keeps its hash
    /// in memory; one with a state folder records it there as
    /// [`super::issue_token`] does.
    ///
    /// Errors: a bad principal name, or the token file cannot be written.
    pub fn issue_token(&self, principal: &str, roles: &[super::Role]) -> Result<super::BearerToken> {
        match &self.state_dir {
            None => self.app.auth.issue(principal, roles),
            Some(dir) => super::issue_token(dir, principal, roles),
        }
    }

    /// One request; returns the status code and the body.
    pub fn call(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: &str,
        body: Option<String>,
    ) -> Result<(u16, String)> {
        use http_body_util::{BodyExt, Full};
        let failed = |e: &dyn std::fmt::Display| -> Error {
            InstanceError::InProcess {
                request: format!("{method} {path_and_query}"),
                why: e.to_string(),
            }
            .into()
        };
        let request = hyper::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, "in-process.invalid")
            .header(hyper::header::AUTHORIZATION, authorization)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
            .map_err(|e| failed(&e))?;
        let app = self.app.clone();
        self.runtime.block_on(async move {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            let server = tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(handle::handle(app, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(server_io), service)
                    .await;
            });
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
                .await
                .map_err(|e| failed(&e))?;
            let driver = tokio::spawn(connection);
            let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.map_err(|e| failed(&e))?.to_bytes();
            drop(sender);
            let _ = driver.await;
            let _ = server.await;
            Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| {
            EmulatorError::Start {
                what: "runtime",
                source,
            }
            .into()
        })
}

async fn accept_loop(
    p: &Prepared,
    listener: std::net::TcpListener,
    max_connections: usize,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(_) => return,
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let (tcp, _peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors or similar: back off instead of spinning.
                Err(_) => { tokio::time::sleep(Duration::from_millis(20)).await; continue; }
            },
        };
        // Over the cap the connection is closed at once: idle or slow clients
        // cannot use up the server's descriptors and tasks.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = p.app.clone();
        let authority = p.authority.clone();
        let acceptor = p.tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (app, authority) = (app.clone(), authority.clone());
                async move {
                    Ok::<_, Infallible>(if authority.claims(req.uri().path()) {
                        authority.serve(req).await
                    } else {
                        handle::handle(app, req).await
                    })
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            match acceptor {
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                }
            }
        });
    }
}

/// Serves in the foreground until the process ends. `on_ready` is called
/// once the socket is bound, so the caller can print the URL and CA path.
///
/// Errors: the state directory is locked by another server, unreadable or
/// damaged, the address is not loopback or cannot be bound.
pub fn serve_blocking(config: Config, on_ready: impl FnOnce(&Ready)) -> Result<()> {
    let prepared = prepare(&config)?;
    let rt = runtime()?;
    on_ready(&prepared.ready);
    let listener = prepared.listener.try_clone().map_err(|source| EmulatorError::Start {
        what: "listener",
        source,
    })?;
    // The sender is kept alive so the loop runs until the process ends.
    let (_keep, shutdown) = oneshot::channel();
    rt.block_on(accept_loop(&prepared, listener, config.max_connections, shutdown));
    Ok(())
}

/// An emulator running on a background thread; stopped when dropped.
pub struct RunningEmulator {
    ready: Ready,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningEmulator {
    pub fn url(&self) -> &str {
        &self.ready.url
    }
    pub fn local_addr(&self) -> SocketAddr {
        self.ready.local_addr
    }
    /// `None` when serving plain HTTP.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.ready.ca_pem_path.as_deref()
    }
    pub fn ready(&self) -> &Ready {
        &self.ready
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts an emulator on a background thread with its own runtime (for
/// `demo`, drills and tests). Returns once it accepts connections.
///
/// Errors: as [`serve_blocking`].
pub fn spawn(config: Config) -> Result<RunningEmulator> {
    let prepared = prepare(&config)?;
    let max_connections = config.max_connections;
    let rt = runtime()?;
    let ready = prepared.ready.clone();
    let (tx, rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("hsm-emulator".into())
        .spawn(move || {
            let prepared = prepared;
            if let Ok(listener) = prepared.listener.try_clone() {
                rt.block_on(accept_loop(&prepared, listener, max_connections, rx));
            }
            // Open connections and background uploads get a moment to finish.
            rt.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(|source| EmulatorError::Start { what: "thread", source })?;
    Ok(RunningEmulator {
        ready,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}
