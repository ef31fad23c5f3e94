//! Headless Chromium (Debian's `chromium` and `chromedriver`) driven over WebDriver, for the
//! console's browser tests: one chromedriver per test on a free port, a fresh profile, and
//! screenshots under `target/test-artifacts/<dir>/`.

use crate::{free_port, wait_until};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Browser {
    pub client: Client,
    driver: Child,
    shots: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a Chromium session with its profile under `profile` (the
    /// flags keep a machine with no network from stalling it; WebGL runs on SwiftShader, the
    /// CPU, for the 3D preview); screenshots go to
    /// `target/test-artifacts/<shots>/`.
    pub async fn start(profile: &Path, shots: &str) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium chromium-driver; ops/dev.sh test installs them)");
        let driver_url = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver", Duration::from_secs(20), || async {
            reqwest::get(format!("{driver_url}/status")).await.ok().filter(|r| r.status().is_success())
        })
        .await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                   format!("--user-data-dir={}", profile.display())]}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver_url)
            .await
            .expect("a Chromium session");
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts").join(shots);
        std::fs::create_dir_all(&shots).unwrap();
        Browser { client, driver, shots }
    }

    /// Signs in to the console at `url` with `token`.
    pub async fn sign_in(&self, url: &str, token: &str) {
        self.client.goto(&format!("{url}/console/login")).await.unwrap();
        self.client.find(Locator::Id("token")).await.unwrap().send_keys(token).await.unwrap();
        self.client.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();
        wait_until("the signed-in console", Duration::from_secs(20), || async {
            self.client.current_url().await.ok().filter(|u| u.path().ends_with("/console/runs")).map(|_| ())
        })
        .await;
    }

    pub async fn shot(&self, name: &str) {
        std::fs::write(self.shots.join(name), self.client.screenshot().await.unwrap()).unwrap();
    }

    pub fn shots_dir(&self) -> &Path {
        &self.shots
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
