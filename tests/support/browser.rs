//! A real browser for the web console's tests: headless Chromium driven over WebDriver.
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a spare loopback TCP port under the
//! [`Watched`] watchdog and opens one WebDriver session (fantoccini) in headless Chromium with
//! a fresh profile in a temp dir. Chromium is kept on loopback: every host name but `localhost`
//! and `127.0.0.1` resolves to nothing, anything that is not loopback goes to a proxy on a port
//! where nothing listens, and its background services (updates, sync, metrics, safe browsing)
//! are off.
//!
//! Every wait is bounded: [`WAIT`] for a condition on the page (or a limit given), [`COMMAND`]
//! for one WebDriver command. A wait that runs out writes a screenshot, and fails the test with
//! what it waited for, what it saw last and the page's console messages.
//!
//! [`require_browser`] follows [`require`]: without `chromium` and `chromedriver` the test is
//! skipped locally and fails in CI. Dropping a [`Browser`] ends its session (which closes
//! Chromium) and stops chromedriver and whatever is left of its process tree.

use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::process::{
    PortReservation, TempDir, Watched, find_program, proc_stat, read_lossy, require,
    spare_tcp_port, tail,
};

/// How long a condition on the page may take by default.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long one WebDriver command (a click, a script, a screenshot) may take.
pub const COMMAND: Duration = Duration::from_secs(30);
/// The window's size unless a test asks for another.
pub const WIDE: (u32, u32) = (1280, 900);
/// The narrow window: a phone held upright.
pub const NARROW: (u32, u32) = (400, 800);

/// The two programs a [`Browser`] needs.
#[derive(Clone, Debug)]
pub struct BrowserPrograms {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`), or `None` after
/// [`require`] has skipped the test (locally) or failed it (in CI).
pub fn require_browser() -> Option<BrowserPrograms> {
    let chromium = find_program("chromium", &["/usr/bin/chromium"]);
    let chromedriver = find_program("chromedriver", &["/usr/bin/chromedriver"]);
    let runs = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    };
    let usable = match (&chromium, &chromedriver) {
        (Some(c), Some(d)) => runs(d).then(|| BrowserPrograms {
            chromium: c.clone(),
            chromedriver: d.clone(),
        }),
        _ => None,
    };
    let available = usable.is_some();
    let go = require("chromium and chromedriver", available, || {
        match (&chromium, &chromedriver) {
            (None, _) => "chromium is not installed".to_string(),
            (_, None) => "chromedriver (chromium-driver) is not installed".to_string(),
            (_, Some(d)) => format!("{} --version fails", d.display()),
        }
    });
    if go { usable } else { None }
}

/// Where [`Browser::screenshot`] writes: `web-screenshots/` in this build's target dir.
/// (`CARGO_TARGET_TMPDIR` is `<target>/tmp`, set for tests and benches; examples that include
/// this module go by `CARGO_TARGET_DIR` or `./target`.)
pub fn screenshot_dir() -> PathBuf {
    let target = match option_env!("CARGO_TARGET_TMPDIR") {
        Some(tmp) => Path::new(tmp)
            .parent()
            .unwrap_or(Path::new(tmp))
            .to_path_buf(),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target")),
    };
    target.join("web-screenshots")
}

/// One chromedriver and one WebDriver session in headless Chromium.
pub struct Browser {
    client: Option<Client>,
    session: Option<String>,
    driver: Option<Watched>,
    port: PortReservation,
    driver_log: PathBuf,
    /// The Chromium profile and chromedriver's own temp files; removed last.
    dir: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of [`WIDE`] size.
    pub async fn start(programs: &BrowserPrograms) -> Browser {
        Browser::start_sized(programs, WIDE).await
    }

    /// Starts chromedriver and a headless Chromium whose window is `width`×`height`.
    pub async fn start_sized(programs: &BrowserPrograms, (width, height): (u32, u32)) -> Browser {
        let dir = TempDir::new("uacreg-browser").expect("temp dir");
        let port = spare_tcp_port().expect("a spare TCP port");
        let driver_log = dir.path().join("chromedriver.log");
        let log = std::fs::File::create(&driver_log).expect("chromedriver log");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp dir");
        let mut command = Command::new(&programs.chromedriver);
        command
            .arg(format!("--port={}", port.port()))
            .arg("--allowed-ips=127.0.0.1")
            // chromedriver's and Chromium's scratch files go into our dir, removed with it.
            .env("TMPDIR", &tmp)
            .env("HOME", dir.path());
        let driver = Watched::spawn(&command, "TERM", &log).expect("chromedriver starts");
        let mut browser = Browser {
            client: None,
            session: None,
            driver: Some(driver),
            port,
            driver_log,
            dir,
        };
        browser.wait_for_driver().await;

        let profile = browser.dir.path().join("profile");
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--disable-gpu".to_string(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
            // Loopback only: no name resolves but loopback's, and whatever is not loopback
            // goes to a proxy on the discard port, where nothing listens.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"
                .to_string(),
            "--proxy-server=http://127.0.0.1:9".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-default-apps".to_string(),
            "--disable-extensions".to_string(),
            "--disable-domain-reliability".to_string(),
            "--disable-client-side-phishing-detection".to_string(),
            "--disable-breakpad".to_string(),
            "--no-pings".to_string(),
            "--no-first-run".to_string(),
            "--no-default-browser-check".to_string(),
            "--metrics-recording-only".to_string(),
            "--disable-features=Translate,OptimizationHints,MediaRouter,InterestFeedContentSuggestions"
                .to_string(),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": programs.chromium, "args": args }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        caps.insert(
            "timeouts".into(),
            json!({ "implicit": 0, "pageLoad": 30_000, "script": 10_000 }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let url = format!("http://127.0.0.1:{}", browser.port.port());
        let connected = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&url),
        )
        .await;
        let client = match connected {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "no WebDriver session in headless Chromium: {e}\nchromedriver log:\n{}",
                browser.driver_log_tail()
            ),
            Err(_) => panic!(
                "no WebDriver session in headless Chromium after 60 s\nchromedriver log:\n{}",
                browser.driver_log_tail()
            ),
        };
        browser.session = bounded("session id", client.session_id())
            .await
            .ok()
            .flatten();
        browser.client = Some(client);
        // --window-size is the outer size; make the page's own viewport the one asked for.
        browser.set_size(width, height).await;
        browser
    }

    /// Waits (bounded) until chromedriver answers `GET /status` with `ready: true`.
    async fn wait_for_driver(&self) {
        let addr = self.driver_addr();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = tokio::task::spawn_blocking(move || {
                http_json(addr, "GET", "/status", None, Duration::from_secs(2))
            })
            .await
            .expect("status probe");
            if let Ok((200, body)) = &answer {
                if body["value"]["ready"] == json!(true) {
                    return;
                }
            }
            let exited = self.driver.as_ref().is_none_or(Watched::has_exited);
            if exited || Instant::now() >= deadline {
                panic!(
                    "chromedriver {} on {addr} (last answer: {answer:?})\nlog:\n{}",
                    if exited {
                        "exited"
                    } else {
                        "not ready after 20 s"
                    },
                    self.driver_log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn driver_addr(&self) -> SocketAddr {
        self.port.addr()
    }

    fn driver_log_tail(&self) -> String {
        tail(&read_lossy(&self.driver_log), 40)
    }

    /// The WebDriver client, for what the helpers here do not cover. Commands sent through it
    /// directly are not bounded: wrap them in [`bounded`].
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("browser session open")
    }

    /// Loads `url` and waits (bounded) for the load to finish.
    pub async fn goto(&self, url: &str) {
        let result = bounded(&format!("loading {url}"), self.client().goto(url)).await;
        if let Err(e) = result {
            self.fail(&format!("loading {url}: {e}")).await;
        }
    }

    /// The page's address as the browser shows it.
    pub async fn current_url(&self) -> String {
        match bounded("current url", self.client().current_url()).await {
            Ok(url) => url.to_string(),
            Err(e) => self.fail(&format!("reading the current url: {e}")).await,
        }
    }

    /// Sets the size of the page's viewport (`innerWidth`×`innerHeight`), whatever the window
    /// frame adds, and waits until the page reports it.
    pub async fn set_size(&self, width: u32, height: u32) {
        let client = self.client();
        let mut outer = (width, height);
        for _ in 0..3 {
            if let Err(e) = bounded("window size", client.set_window_size(outer.0, outer.1)).await {
                self.fail(&format!("setting the window to {outer:?}: {e}"))
                    .await;
            }
            let inner = self
                .js("return [window.innerWidth, window.innerHeight];", vec![])
                .await;
            let (w, h) = (
                inner[0].as_u64().unwrap_or(0) as u32,
                inner[1].as_u64().unwrap_or(0) as u32,
            );
            if (w, h) == (width, height) {
                return;
            }
            outer = (
                (outer.0 + width).saturating_sub(w),
                (outer.1 + height).saturating_sub(h),
            );
        }
        let inner = self
            .js("return [window.innerWidth, window.innerHeight];", vec![])
            .await;
        self.fail(&format!(
            "asked for a {width}x{height} viewport, the page has {inner}"
        ))
        .await;
    }

    /// The narrow window: a [`NARROW`] viewport.
    pub async fn narrow(&self) {
        self.set_size(NARROW.0, NARROW.1).await;
    }

    /// Back to the [`WIDE`] viewport.
    pub async fn wide(&self) {
        self.set_size(WIDE.0, WIDE.1).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns its
    /// result. A script error fails the test.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        match self.try_js(script, args).await {
            Ok(value) => value,
            Err(e) => self.fail(&format!("script failed: {e}\n{script}")).await,
        }
    }

    /// [`Browser::js`] that hands back the error.
    pub async fn try_js(&self, script: &str, args: Vec<Value>) -> Result<Value, CmdError> {
        bounded("script", self.client().execute(script, args)).await
    }

    /// Polls `check` every 100 ms until it answers `Some`, for at most `limit`. Errors from
    /// WebDriver (an element not there yet, a stale one) count as "not yet". When the limit
    /// runs out the test fails with `what`, the last error and a screenshot.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, limit: Duration, mut check: F) -> T
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<Option<T>, CmdError>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            let last = match bounded(what, check(self.client().clone())).await {
                Ok(Some(value)) => return value,
                Ok(None) => "not yet".to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                self.fail(&format!("waited {limit:?} for {what}; last check: {last}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `script` (as in [`Browser::js`]) until it returns something other than `null`,
    /// `undefined` or `false`, for at most `limit`; returns that. On timeout the failure shows
    /// the last value returned.
    pub async fn wait_js(
        &self,
        what: &str,
        limit: Duration,
        script: &str,
        args: Vec<Value>,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.try_js(script, args.clone()).await {
                Ok(Value::Null) | Ok(Value::Bool(false)) => "null/false".to_string(),
                Ok(value) => return value,
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                self.fail(&format!("waited {limit:?} for {what}; last answer: {last}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (default [`WAIT`]) until an element matches `css`; returns it.
    pub async fn wait_element(&self, css: &str) -> Element {
        let css_owned = css.to_string();
        self.wait_for(&format!("an element {css}"), WAIT, move |c| {
            let css = css_owned.clone();
            async move {
                match c.find(Locator::Css(&css)).await {
                    Ok(e) => Ok(Some(e)),
                    Err(e) if e.is_no_such_element() => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Waits (default [`WAIT`]) until an element matching `css` is displayed; returns it.
    pub async fn wait_displayed(&self, css: &str) -> Element {
        self.wait_displayed_for(css, WAIT).await
    }

    /// [`Browser::wait_displayed`] with a limit of its own.
    pub async fn wait_displayed_for(&self, css: &str, limit: Duration) -> Element {
        let css_owned = css.to_string();
        self.wait_for(&format!("{css} to be displayed"), limit, move |c| {
            let css = css_owned.clone();
            async move {
                match c.find(Locator::Css(&css)).await {
                    Ok(e) => Ok(e.is_displayed().await?.then_some(e)),
                    Err(e) if e.is_no_such_element() => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Waits (default [`WAIT`]) until no element matching `css` is displayed (none at all, or
    /// hidden).
    pub async fn wait_hidden(&self, css: &str) {
        let css_owned = css.to_string();
        self.wait_for(&format!("{css} to be hidden"), WAIT, move |c| {
            let css = css_owned.clone();
            async move {
                match c.find(Locator::Css(&css)).await {
                    Ok(e) => Ok((!e.is_displayed().await?).then_some(())),
                    Err(e) if e.is_no_such_element() => Ok(Some(())),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Whether an element matching `css` exists and is displayed, now.
    pub async fn is_displayed(&self, css: &str) -> bool {
        let found = bounded(css, self.client().find(Locator::Css(css))).await;
        match found {
            Ok(e) => bounded(css, e.is_displayed()).await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Clicks the (displayed) element matching `css`, waiting for it first.
    pub async fn click(&self, css: &str) {
        let element = self.wait_displayed(css).await;
        self.click_element(&element, css).await;
    }

    /// Clicks `element` (`what` names it in a failure).
    pub async fn click_element(&self, element: &Element, what: &str) {
        if let Err(e) = bounded(what, element.click()).await {
            self.fail(&format!("clicking {what}: {e}")).await;
        }
    }

    /// Types `text` into the (displayed) element matching `css`, waiting for it first.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_displayed(css).await;
        if let Err(e) = bounded(css, element.send_keys(text)).await {
            self.fail(&format!("typing into {css}: {e}")).await;
        }
    }

    /// Empties the input matching `css`.
    pub async fn clear(&self, css: &str) {
        let element = self.wait_displayed(css).await;
        if let Err(e) = bounded(css, element.clear()).await {
            self.fail(&format!("clearing {css}: {e}")).await;
        }
    }

    /// Presses and releases `key` (a character, or a [`fantoccini::key::Key`] as char) on
    /// whatever has the focus, as a keyboard would.
    pub async fn press(&self, key: impl Into<char>) {
        let value = key.into();
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value })
            .then(KeyAction::Up { value });
        if let Err(e) = bounded("key press", self.client().perform_actions(keys)).await {
            self.fail(&format!("pressing {value:?}: {e}")).await;
        }
    }

    /// Types `text` on whatever has the focus, key by key.
    pub async fn type_keys(&self, text: &str) {
        let mut keys = KeyActions::new("keyboard".into());
        for value in text.chars() {
            keys = keys
                .then(KeyAction::Down { value })
                .then(KeyAction::Up { value });
        }
        if let Err(e) = bounded("typing", self.client().perform_actions(keys)).await {
            self.fail(&format!("typing {text:?}: {e}")).await;
        }
    }

    /// Text of the element matching `css` (waited for); "" for a hidden one.
    pub async fn text(&self, css: &str) -> String {
        let element = self.wait_element(css).await;
        match bounded(css, element.text()).await {
            Ok(text) => text,
            Err(e) => self.fail(&format!("reading the text of {css}: {e}")).await,
        }
    }

    /// Attribute `name` of the element matching `css` (waited for).
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.wait_element(css).await;
        match bounded(css, element.attr(name)).await {
            Ok(value) => value,
            Err(e) => {
                self.fail(&format!("reading attribute {name} of {css}: {e}"))
                    .await
            }
        }
    }

    /// Writes a screenshot of the viewport to `target/web-screenshots/<name>.png`; returns its
    /// path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        match self.try_screenshot(name).await {
            Ok(path) => path,
            Err(e) => panic!("screenshot {name}: {e}"),
        }
    }

    async fn try_screenshot(&self, name: &str) -> Result<PathBuf, String> {
        let png = bounded("screenshot", self.client().screenshot())
            .await
            .map_err(|e| e.to_string())?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// The page's console messages so far (`console.log`, uncaught errors, failed loads),
    /// from chromedriver's log endpoint; each read empties it.
    pub async fn console_messages(&self) -> Vec<String> {
        let (Some(session), addr) = (self.session.clone(), self.driver_addr()) else {
            return vec!["<no session id>".into()];
        };
        let answer = tokio::task::spawn_blocking(move || {
            http_json(
                addr,
                "POST",
                &format!("/session/{session}/se/log"),
                Some(&json!({ "type": "browser" })),
                Duration::from_secs(5),
            )
        })
        .await;
        match answer {
            Ok(Ok((200, body))) => body["value"]
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| {
                            format!(
                                "{} {}",
                                e["level"].as_str().unwrap_or("?"),
                                e["message"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            other => vec![format!("<no browser log: {other:?}>")],
        }
    }

    /// Fails the test with `message`, after writing a screenshot `failure-<time>.png` and
    /// collecting the page's console messages and address.
    pub async fn fail(&self, message: &str) -> ! {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let shot = match self.try_screenshot(&format!("failure-{stamp}")).await {
            Ok(path) => path.display().to_string(),
            Err(e) => format!("<none: {e}>"),
        };
        let url = match bounded("url", self.client().current_url()).await {
            Ok(url) => url.to_string(),
            Err(e) => format!("<unknown: {e}>"),
        };
        let console = self.console_messages().await.join("\n  ");
        panic!("{message}\n  page: {url}\n  screenshot: {shot}\n  console:\n  {console}");
    }

    /// Ends the session (Chromium closes) and stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            if bounded("closing the session", client.close()).await.is_ok() {
                self.session = None;
            }
        }
        // Drop stops chromedriver and anything left behind.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Without a clean close: end the session by hand, so Chromium goes first.
        if let Some(session) = self.session.take() {
            let _ = http_json(
                self.driver_addr(),
                "DELETE",
                &format!("/session/{session}"),
                None,
                Duration::from_secs(5),
            );
        }
        drop(self.client.take());
        if let Some(mut driver) = self.driver.take() {
            // The tree below chromedriver (Chromium and its helpers), as (pid, start time), to
            // kill what outlives chromedriver: only processes that are still those ones.
            let tree: Vec<(u32, u64)> = driver
                .processes()
                .into_iter()
                .filter_map(|pid| Some((pid, proc_stat(pid)?.start_time)))
                .collect();
            driver.stop(Duration::from_secs(5));
            let left: Vec<String> = tree
                .iter()
                .filter(|(pid, start)| {
                    proc_stat(*pid).is_some_and(|s| s.start_time == *start && s.state != 'Z')
                })
                .map(|(pid, _)| pid.to_string())
                .collect();
            if !left.is_empty() {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .args(&left)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

/// `future` bounded by [`COMMAND`]; running out is a WebDriver timeout error.
pub async fn bounded<T>(
    what: &str,
    future: impl Future<Output = Result<T, CmdError>>,
) -> Result<T, CmdError> {
    match tokio::time::timeout(COMMAND, future).await {
        Ok(result) => result,
        Err(_) => {
            eprintln!("WebDriver command for {what} took over {COMMAND:?}");
            Err(CmdError::WaitTimeout)
        }
    }
}

/// One HTTP/1.1 request with a JSON body (or none) to chromedriver on loopback; its status and
/// JSON answer. The connection is closed after it; every step is bounded by `limit`.
fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    limit: Duration,
) -> io::Result<(u16, Value)> {
    assert!(addr.ip().is_loopback(), "chromedriver on loopback only");
    let mut stream = TcpStream::connect_timeout(&addr, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    // chromedriver keeps the connection open whatever the request says: read the head, then
    // as much body as it announces (or, chunked, up to the last chunk).
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 || answer.len() > 64 << 10 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no end of the HTTP head",
            ));
        }
        answer.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status"))?;
    let length: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let chunked = head
        .lines()
        .any(|l| l.replace(' ', "") == "transfer-encoding:chunked");
    loop {
        let body = &answer[head_end..];
        let complete = match length {
            Some(length) => body.len() >= length,
            None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if complete || body.len() > 16 << 20 {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&answer[head_end..]).into_owned();
    let body = if chunked { dechunk(&body) } else { body };
    let json = serde_json::from_str(body.trim()).unwrap_or(Value::String(body));
    Ok((status, json))
}

/// The payload of a chunked HTTP body.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
