//! The proxy under test, started in-process from configuration text.

use std::net::SocketAddr;

use proxy_bin::config;
use proxy_bin::server::{self, Running};

/// Replaces every `{NAME}` in `template` with the address given for `NAME`.
///
/// Only the names listed are replaced, so TOML inline tables (`{ address = ... }`) and proxy
/// variables (`$host`) pass through untouched.
pub fn fill(template: &str, addrs: &[(&str, SocketAddr)]) -> String {
    let mut text = template.to_owned();
    for (name, addr) in addrs {
        text = text.replace(&format!("{{{name}}}"), &addr.to_string());
    }
    text
}

/// Adds a `127.0.0.1:0` listener when the text declares none.
fn with_listener(text: &str) -> String {
    if text.contains("[[listeners]]") {
        text.to_owned()
    } else {
        format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n\n{text}")
    }
}

/// Parses configuration text, panicking with every `LINE:COL: message` when it is invalid.
pub fn parse_config(text: &str) -> config::Config {
    let text = with_listener(text);
    match config::parse(&text) {
        Ok(c) => c,
        Err(errors) => {
            let lines: Vec<String> = errors
                .iter()
                .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
                .collect();
            panic!(
                "test configuration is invalid:\n{}\n--- configuration ---\n{text}",
                lines.join("\n")
            )
        }
    }
}

/// A proxy running in this process on an ephemeral loopback port.
#[derive(Debug)]
pub struct TestProxy {
    running: Running,
    addr: SocketAddr,
}

/// One upstream `app` with `upstream_lines` (balancer, health, timeouts) and `endpoints` (a
/// TOML list body such as `"{A}", "{B}"`), behind a default server routing every path to it.
pub fn pool_config(upstream_lines: &str, endpoints: &str) -> String {
    format!(
        "\n[upstreams.app]\n{upstream_lines}\nendpoints = [{endpoints}]\n\n[[servers]]\n\
         default = true\n\n[[servers.routes]]\nprefix = \"/\"\nupstream = \"app\"\n"
    )
}

impl TestProxy {
    /// Starts the proxy from configuration text; a `[[listeners]]` entry on `127.0.0.1:0` is
    /// added when the text has none. Panics on invalid configuration.
    pub async fn start(text: &str) -> TestProxy {
        let config = parse_config(text);
        let running = server::start(config).await.expect("the proxy starts");
        let addr = *running.addrs().first().expect("one listener bound");
        assert!(addr.ip().is_loopback(), "tests listen on loopback only");
        TestProxy { running, addr }
    }

    /// The common fixture: `settings` (TOML such as a `[proxy]` table, or empty), then one
    /// upstream `app` at `backend` and a default server routing every path to it.
    pub async fn single(backend: SocketAddr, settings: &str) -> TestProxy {
        let text = format!("{settings}\n{}", pool_config("", &format!("\"{backend}\"")));
        TestProxy::start(&text).await
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The running server, for its own API.
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// Parses `text` and swaps its runtime configuration in (listeners are not rebound).
    pub fn reload(&self, text: &str) {
        self.running.reload(parse_config(text).proxy);
    }

    /// Graceful shutdown: stops accepting and drains the connections in flight.
    pub async fn shutdown(self) {
        self.running.shutdown().await;
    }
}
