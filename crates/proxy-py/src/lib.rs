//! `ws_proxy._native`: the Python extension behind the `ws_proxy` package (see
//! `python/ws_proxy/__init__.py` and `docs/python.md`). It wraps [`proxy_server::WebsocketProxy`]
//! in the Python class of `lab-orchestrator-ws-proxy-lib` and [`proxy_auth`]'s minting and
//! verification, so a Python lab backend and the proxy share one token implementation.
//!
//! Logging goes to Python's `logging` (through `pyo3-log`): the proxy's events arrive on loggers
//! named after their Rust modules (`proxy_server.engine`, `proxy_upstream.kubevirt`, ...), at
//! the level Python's configuration lets through; they never carry a token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_auth::{
    AuthError, ConsoleAccess, ConsoleRole, Expiry, Identifier, IssueOptions, LabInstance,
    SigningKey, Verifier,
};
use proxy_server::{KubeVirtConnectorBuilder, Limits, RejectStyle, WebsocketProxy};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

pyo3::create_exception!(
    _native,
    TokenError,
    PyValueError,
    "A console token was refused; `label` says why (expired, bad_signature, vm_not_allowed, ...)."
);

/// The proxy, with the constructor and methods of `lab_orchestrator_ws_proxy_lib`'s
/// `WebsocketProxy` and keyword arguments for the settings the original does not have.
#[pyclass(module = "ws_proxy._native", name = "WebsocketProxy")]
struct PyWebsocketProxy {
    proxy: Arc<WebsocketProxy>,
}

#[pymethods]
impl PyWebsocketProxy {
    #[new]
    #[pyo3(signature = (
        remote_url,
        api_path,
        local_dev_mode,
        secret_key,
        host_path_prefix = None,
        *,
        ca_file = None,
        token_file = None,
        max_sessions = None,
        drain_timeout = None,
        reject_style = None,
        preserve_session = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        remote_url: &str,
        api_path: &str,
        local_dev_mode: bool,
        secret_key: &str,
        host_path_prefix: Option<&str>,
        ca_file: Option<PathBuf>,
        token_file: Option<PathBuf>,
        max_sessions: Option<usize>,
        drain_timeout: Option<f64>,
        reject_style: Option<&str>,
        preserve_session: bool,
    ) -> PyResult<Self> {
        let mut builder = WebsocketProxy::builder()
            .secret_key(secret_key)
            .api_path(api_path);
        let mut upstream = if local_dev_mode {
            KubeVirtConnectorBuilder::local_dev().remote_url(remote_url)
        } else {
            KubeVirtConnectorBuilder::new(remote_url)
                .bearer_token_file(proxy_server::proxy_upstream::SERVICE_ACCOUNT_TOKEN_PATH)
                .ca_file(proxy_server::proxy_upstream::SERVICE_ACCOUNT_CA_PATH)
        };
        if let Some(path) = ca_file {
            upstream = upstream.ca_file(path);
        }
        if let Some(path) = token_file {
            upstream = upstream.bearer_token_file(path);
        }
        builder = builder.upstream(
            upstream
                .preserve_session(preserve_session)
                .api_path(api_path),
        );
        if let Some(prefix) = host_path_prefix {
            builder = builder.host_path_prefix(prefix);
        }
        if let Some(max_sessions) = max_sessions {
            let mut limits = Limits::default();
            limits.max_sessions = max_sessions;
            builder = builder.limits(limits);
        }
        if let Some(seconds) = drain_timeout {
            let drain = Duration::try_from_secs_f64(seconds)
                .map_err(|_| PyValueError::new_err("drain_timeout must be seconds >= 0"))?;
            builder = builder.drain_timeout(drain);
        }
        if let Some(style) = reject_style {
            let style = match style {
                "auto" => RejectStyle::Auto,
                "http" => RejectStyle::HttpStatus,
                "close" => RejectStyle::CloseFrame,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "reject_style {other:?} is not auto, http or close"
                    )));
                }
            };
            builder = builder.reject_style(style);
        }
        let proxy = builder
            .build()
            .map_err(|error| PyValueError::new_err(one_line(&error)))?;
        Ok(Self {
            proxy: Arc::new(proxy),
        })
    }

    /// Serves in the foreground until SIGTERM or SIGINT (Ctrl-C), then drains and returns.
    /// Raises `OSError` when the address is taken.
    /// The GIL is released meanwhile, so other Python threads run.
    fn run(&self, py: Python<'_>, host: &str, port: u16) -> PyResult<()> {
        let proxy = Arc::clone(&self.proxy);
        // The engine handles SIGINT itself (it drains). Python's handler would also fire and
        // raise KeyboardInterrupt inside whatever Python code runs next (a log call), so it is
        // set aside while the proxy runs, and put back after.
        let set_aside = set_aside_python_sigint(py);
        let served = py.detach(|| proxy.run(host, port));
        if let Some((signal, previous)) = set_aside {
            let _ = signal.call_method1("signal", (signal.getattr("SIGINT")?, previous));
        }
        served.map_err(|error| run_error(&error))
    }

    /// Starts serving on a background thread; returns `(host, port)` once listening (port 0
    /// picks a free one). Raises `OSError` when the address is taken, `RuntimeError` when a
    /// thread already runs.
    fn run_in_thread(&self, py: Python<'_>, host: &str, port: u16) -> PyResult<(String, u16)> {
        let address = py
            .detach(|| self.proxy.run_in_thread(host, port))
            .map_err(|error| run_error(&error))?;
        Ok((address.ip().to_string(), address.port()))
    }

    /// Stops the background thread gracefully (drain, then 1001 for sessions still open after
    /// the drain timeout) and joins it; nothing happens when no thread runs.
    fn stop_thread(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.proxy.stop_thread())
            .map_err(|error| run_error(&error))
    }

    /// `(host, port)` of the background thread's listener while it runs, else `None`.
    #[getter]
    fn local_address(&self) -> PyResult<Option<(String, u16)>> {
        Ok(self
            .proxy
            .local_addr()
            .map(|address| (address.ip().to_string(), address.port())))
    }

    /// The Prometheus text of the proxy's metrics (what `/metrics` serves).
    fn metrics(&self) -> PyResult<String> {
        self.proxy
            .metrics()
            .encode()
            .map_err(|error| PyRuntimeError::new_err(error.to_string()))
    }
}

/// Replaces Python's SIGINT handler with SIG_IGN (before the engine installs its own), and
/// returns the `signal` module and the previous handler; `None` off the main thread, where
/// Python does not allow it and has no handler to fire.
fn set_aside_python_sigint(py: Python<'_>) -> Option<(Bound<'_, PyModule>, Bound<'_, PyAny>)> {
    let signal = py.import("signal").ok()?;
    let number = signal.getattr("SIGINT").ok()?;
    let previous = signal.call_method1("getsignal", (&number,)).ok()?;
    signal
        .call_method1("signal", (&number, signal.getattr("SIG_IGN").ok()?))
        .ok()?;
    Some((signal, previous))
}

impl Drop for PyWebsocketProxy {
    /// A garbage-collected proxy stops its thread. The GIL is released meanwhile: the draining
    /// server logs, and its log records need the GIL to reach Python's `logging`.
    fn drop(&mut self) {
        let proxy = Arc::clone(&self.proxy);
        Python::attach(|py| py.detach(|| proxy.stop_thread()))
            .unwrap_or_else(|error| log::warn!("stopping the collected proxy failed: {error}"));
    }
}

fn run_error(error: &proxy_server::RunError) -> PyErr {
    match error {
        proxy_server::RunError::Bind { .. } => PyOSError::new_err(one_line(error)),
        _ => PyRuntimeError::new_err(one_line(error)),
    }
}

fn one_line(error: &dyn std::error::Error) -> String {
    proxy_server::proxy_core::ErrorChain(error).to_string()
}

/// What a verified token allows (`ws_proxy.auth.verify` returns it as a dict).
fn grant_dict<'py>(py: Python<'py>, grant: proxy_auth::Grant) -> PyResult<Bound<'py, PyDict>> {
    let identifier = |id: &Identifier| -> PyResult<Py<PyAny>> {
        Ok(match id {
            Identifier::Int(value) => value.into_pyobject(py)?.into_any().unbind(),
            Identifier::Str(value) => value.into_pyobject(py)?.into_any().unbind(),
        })
    };
    let dict = PyDict::new(py);
    dict.set_item("user_id", identifier(&grant.user_id)?)?;
    dict.set_item("lab_id", identifier(&grant.lab_id)?)?;
    dict.set_item("lab_instance_id", identifier(&grant.lab_instance_id)?)?;
    dict.set_item("namespace", grant.namespace)?;
    dict.set_item("vmi_name", grant.vmi_name)?;
    let expires = grant
        .expires_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |duration| duration.as_secs());
    dict.set_item("expires_at", expires)?;
    let additional = grant
        .additional_data
        .map(|value| value.to_string())
        .unwrap_or_else(|| "null".to_owned());
    dict.set_item("additional_data_json", additional)?;
    dict.set_item("token_id", grant.token_id)?;
    dict.set_item("console_role", grant.console.role.as_str())?;
    dict.set_item("record", grant.console.record)?;
    Ok(dict)
}

/// Verifies `token` for `vmi_name` as the proxy does, with the HS256 `secret_key` or a PEM
/// public key (RS256, ES256 or EdDSA by its type); returns the grant as a dict or raises
/// `TokenError` with the reason's label.
#[pyfunction]
#[pyo3(signature = (token, vmi_name, secret_key = None, leeway = 0.0, *, public_key_pem = None))]
fn verify<'py>(
    py: Python<'py>,
    token: &str,
    vmi_name: &str,
    secret_key: Option<&str>,
    leeway: f64,
    public_key_pem: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    let leeway = Duration::try_from_secs_f64(leeway)
        .map_err(|_| PyValueError::new_err("leeway must be seconds >= 0"))?;
    let bad = |error: &dyn std::error::Error| PyValueError::new_err(one_line(error));
    let (key, algorithm) = match (secret_key, public_key_pem) {
        (Some(secret), None) => (
            proxy_auth::VerificationKey::hmac_secret(secret.as_bytes()).map_err(|e| bad(&e))?,
            proxy_auth::Algorithm::HS256,
        ),
        (None, Some(pem)) => {
            let key = proxy_auth::VerificationKey::from_public_key_pem(pem.as_bytes())
                .map_err(|e| bad(&e))?;
            let algorithm = match key.family() {
                proxy_auth::KeyFamily::Rsa => proxy_auth::Algorithm::RS256,
                proxy_auth::KeyFamily::Ec => proxy_auth::Algorithm::ES256,
                _ => proxy_auth::Algorithm::EdDSA,
            };
            (key, algorithm)
        }
        _ => {
            return Err(PyValueError::new_err(
                "give exactly one of secret_key and public_key_pem",
            ));
        }
    };
    let verifier = Verifier::builder()
        .key(key)
        .algorithms([algorithm])
        .leeway(leeway)
        .build()
        .map_err(|error| bad(&error))?;
    match verifier.verify(token, vmi_name) {
        Ok(grant) => grant_dict(py, grant),
        Err(error) => Err(token_error(py, &error)),
    }
}

fn token_error(py: Python<'_>, error: &AuthError) -> PyErr {
    let raised = TokenError::new_err(error.to_string());
    let _ = raised.value(py).setattr("label", error.label());
    raised
}

/// Mints a console token as LabOrchestrator's `generate_auth_token` does (HS256), optionally
/// with a `jti` and the `console` claim (role `control` or `observer`, `record`).
#[pyfunction]
#[pyo3(signature = (
    user_id,
    lab_id,
    lab_instance_id,
    namespace,
    allowed_vmi_names,
    secret_key,
    expires_in = 600.0,
    *,
    additional_data_json = None,
    token_id = None,
    console_role = None,
    record = false,
))]
#[allow(clippy::too_many_arguments)]
fn issue(
    user_id: i64,
    lab_id: i64,
    lab_instance_id: i64,
    namespace: &str,
    allowed_vmi_names: Vec<String>,
    secret_key: &str,
    expires_in: f64,
    additional_data_json: Option<&str>,
    token_id: Option<String>,
    console_role: Option<&str>,
    record: bool,
) -> PyResult<String> {
    let mut lab = LabInstance::new(lab_id, lab_instance_id, namespace, allowed_vmi_names);
    if let Some(json) = additional_data_json {
        let value = serde_json::from_str(json)
            .map_err(|error| PyValueError::new_err(format!("additional_data_json: {error}")))?;
        lab = lab.with_additional_data(value);
    }
    let lifetime = Duration::try_from_secs_f64(expires_in)
        .map_err(|_| PyValueError::new_err("expires_in must be seconds >= 0"))?;
    let role = match console_role {
        None => None,
        Some("control") => Some(ConsoleRole::Control),
        Some("observer") => Some(ConsoleRole::Observer),
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "console_role {other:?} is not control or observer"
            )));
        }
    };
    let options = IssueOptions {
        token_id,
        console: (role.is_some() || record).then(|| ConsoleAccess {
            role: role.unwrap_or_default(),
            record,
        }),
    };
    let key =
        SigningKey::hs256(secret_key).map_err(|error| PyValueError::new_err(one_line(&error)))?;
    proxy_auth::issue_with(user_id, lab, Expiry::In(lifetime), &key, &options)
        .map_err(|error| PyValueError::new_err(one_line(&error)))
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // Every level reaches Python, which decides per logger (its level may change after the
    // import, as pytest's caplog or an application's dictConfig do); loggers are cached.
    // A second import keeps the first logger.
    let _ = pyo3_log::Logger::new(module.py(), pyo3_log::Caching::Loggers)?
        .filter(log::LevelFilter::Trace)
        .install();
    module.add_class::<PyWebsocketProxy>()?;
    module.add_function(wrap_pyfunction!(verify, module)?)?;
    module.add_function(wrap_pyfunction!(issue, module)?)?;
    module.add("TokenError", module.py().get_type::<TokenError>())?;
    Ok(())
}
