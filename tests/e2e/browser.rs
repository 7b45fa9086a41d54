//! The web SDK (`sdk/web`) in headless Debian Chromium, against the real ingest-api and
//! PostgreSQL: the bundle a site loads (`dist/interaction-logger.min.js`), on a page served
//! from another origin (`http://localhost:<port>`, ingest-api being `http://127.0.0.1:<port>`)
//! so every request goes through CORS as a site's would.
//!
//! The browser is run by `sdk/web/test/browser/driver.mjs` (playwright-core), one JSON command
//! per line; this side owns the services, their outages and every assertion. Needs Chromium
//! at /usr/bin/chromium (or `CHROMIUM`) and the SDK's npm packages: `make test` installs both
//! (scripts/ensure-browser.sh, `make sdk`). Every wait is for a state, bounded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use interaction_testing::wait_until;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use crate::pipeline::{API_KEY, Layout, Pipeline, Service};

/// Headless Chromium with one browser context (its tabs share the origin's storage).
/// Its methods take `&self` so that a check of [`wait_until`] can call them.
struct Browser {
    child: Child,
    /// One command at a time.
    io: Mutex<DriverIo>,
    /// The driver's TMPDIR, where Playwright puts Chromium's profile and artifacts: removed
    /// after the driver ended, whatever state it ended in (killed, it cannot clean up).
    _tmp: TempDir,
    /// Where the driver serves sdk/web: the pages' origin.
    origin: String,
    /// The driver's recording proxy in front of ingest-api: the pages' `endpoint`.
    endpoint: String,
}

/// The driver's input and output, and the id of the last command.
struct DriverIo {
    /// Closed on drop: the driver then closes Chromium, which removes its profile.
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    next: u64,
}

impl Browser {
    async fn start() -> Self {
        let driver =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/web/test/browser/driver.mjs");
        let tmp = TempDir::new();
        let mut child = Command::new("node")
            .arg(&driver)
            .env("TMPDIR", &tmp.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("run node (Node.js 20 must be on PATH)");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the browser driver did not start within 60 s")
            .unwrap()
            .expect(
                "the browser driver exited at start (see its stderr above): Chromium or the \
                 SDK's npm packages missing? `make test` installs both",
            );
        let hello: Value = serde_json::from_str(&first).unwrap();
        Self {
            child,
            io: Mutex::new(DriverIo {
                stdin: Some(stdin),
                lines,
                next: 0,
            }),
            _tmp: tmp,
            origin: hello["origin"].as_str().unwrap().to_owned(),
            endpoint: String::new(),
        }
    }

    /// Sends one command and returns its result; panics with the driver's error.
    async fn call(&self, mut command: Value) -> Value {
        let mut io = self.io.lock().await;
        io.next += 1;
        let id = io.next;
        command["id"] = json!(id);
        let mut line = command.to_string();
        line.push('\n');
        let stdin = io.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(120), io.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no answer to {command} within 120 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("the browser driver exited during {command}"));
        let mut answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["id"], json!(id), "answer out of order: {answer}");
        if let Some(error) = answer.get("error") {
            panic!(
                "{command} failed in the browser: {}",
                error.as_str().unwrap_or_default()
            );
        }
        answer["ok"].take()
    }

    async fn open(&self, tab: &str, path: &str) {
        self.call(json!({"op": "open", "tab": tab, "path": path}))
            .await;
    }

    async fn eval(&self, tab: &str, js: &str) -> Value {
        self.call(json!({"op": "eval", "tab": tab, "js": js})).await
    }

    /// Evaluates `js`, which tracks events and returns their eventIds.
    async fn track(&self, tab: &str, js: &str) -> Vec<String> {
        strings(&self.eval(tab, js).await)
    }

    async fn reload(&self, tab: &str) {
        self.call(json!({"op": "reload", "tab": tab})).await;
    }

    async fn click(&self, tab: &str, selector: &str) {
        self.call(json!({"op": "click", "tab": tab, "selector": selector}))
            .await;
    }

    /// Every request the pages made to ingest-api so far, as its proxy saw them, in order of
    /// arrival: `at` (ms since the driver started), `method`, `path`, `contentType`,
    /// `contentEncoding`, `ids` (the body's eventIds), `status`, `retryAfter`, `failure`.
    async fn requests(&self) -> Vec<Value> {
        self.call(json!({"op": "requests"}))
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// The POSTs among [`Self::requests`].
    async fn posts(&self) -> Vec<Value> {
        let mut posts = self.requests().await;
        posts.retain(|r| r["method"] == "POST");
        posts
    }

    /// Uncaught exceptions and unhandled rejections of every page so far.
    async fn page_errors(&self) -> Vec<Value> {
        self.call(json!({"op": "errors"}))
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// Evaluates `js` until it returns `true`, for at most `limit`.
    async fn wait_true(&self, tab: &str, js: &str, limit: Duration) {
        wait_until(&format!("`{js}`"), limit, async || {
            (self.eval(tab, js).await == json!(true)).then_some(())
        })
        .await;
    }

    /// Waits until the page's queue in IndexedDB holds exactly `n` events.
    async fn wait_queued(&self, tab: &str, n: usize) {
        self.wait_true(
            tab,
            &format!("queueKeys().then((keys) => keys.length === {n})"),
            Duration::from_secs(30),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End of input: the driver closes Chromium and exits (a few hundred ms).
        self.io.get_mut().stdin.take();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.start_kill();
    }
}

/// A directory of its own under the system's temporary directory, removed on drop (also
/// when the test fails while starting the driver).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("browser-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the browser, then the pipeline with the browser's origin allowed by CORS, then the
/// recording proxy in front of ingest-api.
async fn start(layout: Layout, extra: &[(&str, &str)]) -> (Browser, Pipeline) {
    let mut browser = Browser::start().await;
    let origin = browser.origin.clone();
    let mut env = vec![("CORS_ALLOWED_ORIGINS", origin.as_str())];
    env.extend_from_slice(extra);
    let pipeline = Pipeline::start_with(layout, &env).await;
    let endpoint = browser
        .call(json!({"op": "proxy", "target": pipeline.ingest}))
        .await;
    browser.endpoint = endpoint.as_str().unwrap().to_owned();
    (browser, pipeline)
}

/// [`start`] with the default layout, then tab "a" open on the test page with `options`.
async fn start_on_page(options: &str) -> (Browser, Pipeline) {
    let (browser, pipeline) = start(Layout::default(), &[]).await;
    let path = page(&browser.endpoint, options);
    browser.open("a", &path).await;
    (browser, pipeline)
}

/// [`start_on_page`], but ingest-api is stopped (SIGTERM) before the page opens.
async fn start_on_page_offline(options: &str) -> (Browser, Pipeline) {
    let (browser, mut pipeline) = start(Layout::default(), &[]).await;
    pipeline.terminate(Service::Ingest(0)).await;
    let path = page(&browser.endpoint, options);
    browser.open("a", &path).await;
    (browser, pipeline)
}

/// The test page's path, with a logger sending to `endpoint`; `options` adds query
/// parameters (batchSize, flushInterval, maxQueue).
fn page(endpoint: &str, options: &str) -> String {
    format!("/test/browser/page.html?endpoint={endpoint}&key={API_KEY}&{options}")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the database holds as many events as `expected`, then requires that they are
/// exactly those, each stored once.
async fn assert_stored_exactly_once(pipeline: &Pipeline, expected: &[String], limit: Duration) {
    assert!(
        expected.iter().all(|id| id.len() == 36),
        "every track() returned an eventId: {expected:?}"
    );
    let stored = pipeline
        .wait_for(
            &format!("{} events stored", expected.len()),
            limit,
            async || {
                let ids = pipeline.stored_event_ids().await;
                (ids.len() >= expected.len()).then_some(ids)
            },
        )
        .await;
    assert_eq!(
        counts(&stored),
        counts(expected),
        "stored events differ from those tracked (a count of 2 is a duplicate)"
    );
}

fn counts(ids: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn browser_200_events_tracked_then_the_page_navigates_away_are_all_stored_exactly_once() {
    let (browser, pipeline) = start_on_page("batchSize=20").await;
    // The page navigates away at once: what the normal path has not had confirmed by then
    // goes on page hide, by keepalive fetch.
    let ids = browser
        .track(
            "a",
            "(() => { const ids = trackMany(200, 'unload');
              setTimeout(() => { location.href = '/test/browser/away.html'; }, 0);
              return ids; })()",
        )
        .await;
    assert_eq!(ids.len(), 200);
    assert_stored_exactly_once(&pipeline, &ids, Duration::from_secs(60)).await;
    let posts = browser.posts().await;
    let unload: Vec<&Value> = posts
        .iter()
        .filter(|r| {
            r["contentType"]
                .as_str()
                .unwrap_or("")
                .starts_with("text/plain")
        })
        .collect();
    assert!(
        !unload.is_empty(),
        "no text/plain (page hide) request among {posts:#?}"
    );
    // Page hide sent what had not been confirmed: together with the normal requests that
    // completed, every event went out at least once.
    let sent: Vec<String> = posts.iter().flat_map(|r| strings(&r["ids"])).collect();
    assert_eq!(counts(&sent).len(), 200, "{posts:#?}");
    for request in &unload {
        assert!(
            request["path"].as_str().unwrap() == "/api/v1/logs",
            "the key travels in the body, not the query: {request}"
        );
    }
    assert!(browser.page_errors().await.is_empty());
}

#[tokio::test]
async fn browser_50_events_tracked_across_two_reloads_while_ingest_is_stopped_arrive_exactly_once()
{
    let (browser, mut pipeline) = start_on_page_offline("batchSize=20&flushInterval=300").await;
    let mut ids = browser.track("a", "trackMany(25, 'first')").await;
    browser.wait_queued("a", 25).await;
    browser.reload("a").await;
    browser.wait_queued("a", 25).await;
    ids.extend(browser.track("a", "trackMany(25, 'second')").await);
    browser.wait_queued("a", 50).await;
    browser.reload("a").await;
    browser.wait_queued("a", 50).await;
    // The page keeps trying (and backing off) meanwhile: wait for a failed attempt (its CORS
    // preflight, or the POST once the preflight is cached); none got through.
    let requests = wait_until("a failed attempt", Duration::from_secs(30), async || {
        let requests = browser.requests().await;
        requests
            .iter()
            .any(|r| !r["failure"].is_null())
            .then_some(requests)
    })
    .await;
    assert!(
        requests.iter().all(|r| r["status"].is_null()),
        "a request got an answer while ingest-api was stopped: {requests:#?}"
    );

    pipeline.spawn(Service::Ingest(0));
    pipeline.wait_ready(Service::Ingest(0)).await;
    // The page's backoff after a few failures is at most tens of seconds.
    assert_stored_exactly_once(&pipeline, &ids, Duration::from_secs(120)).await;
    browser.wait_queued("a", 0).await;
    assert!(browser.page_errors().await.is_empty());
}

#[tokio::test]
async fn browser_ingest_answering_503_is_retried_only_after_its_retry_after_then_delivered() {
    let layout = Layout {
        proxy_database: true,
        ..Layout::default()
    };
    let (browser, pipeline) = start(layout, &[("RETRY_AFTER_SECONDS", "2")]).await;
    let proxy = pipeline.database_proxy.as_ref().unwrap();
    proxy.cut();
    browser
        .open(
            "a",
            &page(&browser.endpoint, "batchSize=10&flushInterval=200"),
        )
        .await;
    let ids = browser.track("a", "trackMany(10, 'retry')").await;
    wait_until("three 503s", Duration::from_secs(60), async || {
        let posts = browser.posts().await;
        (posts.iter().filter(|r| r["status"] == 503).count() >= 3).then_some(())
    })
    .await;
    proxy.restore();
    assert_stored_exactly_once(&pipeline, &ids, Duration::from_secs(60)).await;

    let posts = browser.posts().await;
    for pair in posts.windows(2) {
        let (answered, next) = (&pair[0], &pair[1]);
        assert_eq!(
            answered["status"], 503,
            "only the last request succeeds: {posts:#?}"
        );
        assert_eq!(answered["retryAfter"], "2", "{answered}");
        // The next request starts at least Retry-After after the 503 was answered, so at
        // least that long after the answered request started.
        let gap = next["at"].as_u64().unwrap() - answered["at"].as_u64().unwrap();
        assert!(
            gap >= 2_000,
            "a request {gap} ms after a 503 with Retry-After: 2: {posts:#?}"
        );
    }
    assert_eq!(posts.last().unwrap()["status"], 202, "{posts:#?}");
    // One CORS preflight for all of them: the browser cached it (Access-Control-Max-Age).
    let requests = browser.requests().await;
    let preflights = requests.iter().filter(|r| r["method"] == "OPTIONS").count();
    assert_eq!(preflights, 1, "{requests:#?}");
    assert!(browser.page_errors().await.is_empty());
}

#[tokio::test]
async fn browser_10000_events_while_the_server_is_down_stay_under_the_cap_and_drops_are_reported() {
    let (browser, _pipeline) = start_on_page_offline("").await;
    // The 10,000 come in ten bursts, so that the queue is written to while full; the page
    // waits until onDrop has reported every event beyond the default cap (maxQueue 1000).
    let result = browser
        .eval(
            "a",
            "(async () => {
               let tracked = 0;
               for (let burst = 0; burst < 10; burst++) {
                 tracked += trackMany(1000, 'flood' + burst).filter(Boolean).length;
                 // One turn of the event loop, not a wait: the write of this burst starts
                 // before the next burst is tracked.
                 await new Promise((r) => setTimeout(r, 0));
               }
               const dropped = () => drops.reduce((n, d) => n + d.count, 0);
               const until = Date.now() + 30000;
               while (dropped() < 9000 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
               const keys = await queueKeys();
               return {
                 tracked, drops,
                 most: queueHigh,
                 queued: keys.length,
                 bytes: keys.reduce((n, k) => n + Number(k.split('|')[1]), 0),
                 usage: (await navigator.storage.estimate()).usage,
               };
             })()",
        )
        .await;
    eprintln!("10,000 events while down: {result}");
    assert_eq!(result["tracked"], 10_000, "{result}");
    let drops = result["drops"].as_array().unwrap();
    assert!(drops.iter().all(|d| d["reason"] == "overflow"), "{result}");
    let dropped: u64 = drops.iter().map(|d| d["count"].as_u64().unwrap()).sum();
    assert_eq!(dropped, 9_000, "{result}");
    assert_eq!(result["queued"], 1_000, "{result}");
    assert!(result["most"].as_u64().unwrap() <= 1_000, "{result}");
    assert!(result["bytes"].as_u64().unwrap() <= 1 << 20, "{result}");
    assert!(browser.page_errors().await.is_empty());
}

#[tokio::test]
async fn browser_two_tabs_of_one_origin_never_send_the_same_event_twice() {
    let (browser, pipeline) = start_on_page("batchSize=20&flushInterval=200").await;
    let path = page(&browser.endpoint, "batchSize=20&flushInterval=200");
    browser.open("b", &path).await;
    let mut ids = Vec::new();
    for round in 0..5 {
        for tab in ["a", "b"] {
            let js = format!("trackMany(20, '{tab}{round}')");
            ids.extend(browser.track(tab, &js).await);
        }
    }
    assert_stored_exactly_once(&pipeline, &ids, Duration::from_secs(60)).await;
    let posts = browser.posts().await;
    let sent: Vec<String> = posts.iter().flat_map(|r| strings(&r["ids"])).collect();
    let twice: Vec<(&str, usize)> = counts(&sent).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(
        twice.is_empty(),
        "sent more than once: {twice:?}\n{posts:#?}"
    );
    assert_eq!(counts(&sent), counts(&ids), "{posts:#?}");
    assert!(browser.page_errors().await.is_empty());
}

#[tokio::test]
async fn browser_batches_are_gzipped_and_a_refused_item_is_reported_through_on_error() {
    let (browser, pipeline) = start_on_page("batchSize=20").await;
    let ids = browser
        .track(
            "a",
            "(() => { const ids = trackMany(19, 'gzip');
              ids.push(logger.track({ assetId: 'gzip-bad', interaction: 'select', ratingEquivalent: 7 }));
              return ids; })()",
        )
        .await;
    let (good, bad) = ids.split_at(19);
    assert_stored_exactly_once(&pipeline, good, Duration::from_secs(60)).await;
    browser
        .wait_true("a", "reported.length > 0", Duration::from_secs(30))
        .await;
    let reported = browser.eval("a", "reported").await;
    let report = &reported[0];
    assert_eq!(report["status"], 202, "{reported}");
    assert_eq!(report["retry"], false, "{reported}");
    let items = report["errors"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{reported}");
    assert_eq!(items[0]["eventId"], bad[0].as_str(), "{reported}");
    assert_eq!(items[0]["index"], 19, "{reported}");

    let posts = browser.posts().await;
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0]["contentEncoding"], "gzip", "{posts:#?}");
    assert_eq!(
        strings(&posts[0]["ids"]),
        ids,
        "the gzip body holds the batch"
    );
    assert!(browser.page_errors().await.is_empty());
}

#[tokio::test]
async fn browser_the_example_video_page_sends_what_its_viewer_does() {
    let (browser, pipeline) = start(Layout::default(), &[]).await;
    browser
        .open(
            "a",
            &format!(
                "/examples/video.html?endpoint={}&key={API_KEY}",
                browser.endpoint
            ),
        )
        .await;
    for selector in [
        ".card[data-asset=ep-101]",
        "#play",
        "#like",
        "#watchlist",
        "#flush",
    ] {
        browser.click("a", selector).await;
    }
    let stored = pipeline
        .wait_for("the viewer's events", Duration::from_secs(60), async || {
            let stored = pipeline.stored_interactions().await;
            let has = |what: &str| stored.iter().any(|s| s == what);
            // The video profile's ratings: impression, click, play, like, add to watchlist.
            (has("ep-101 recommendationImpression 0")
                && has("ep-101 select 0.25")
                && has("ep-101 play 0.25")
                && has("ep-101 rate 1")
                && has("ep-101 select 1"))
            .then_some(stored)
        })
        .await;
    eprintln!("the example page stored: {stored:?}");
    assert!(browser.page_errors().await.is_empty());
}
