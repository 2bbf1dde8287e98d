//! One way to start the binary in tests: a real `starfish serve` on a free loopback
//! port, read from its log, stopped by PID.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_starfish");
pub const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/serve-yaml/starfish.yaml"
);

pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Told when the server's log ends, i.e. when the process has exited.
    log_closed: std::sync::mpsc::Receiver<()>,
}

impl Server {
    /// Serves the sample config with the data directory `data` and `extra` flags.
    pub fn start(extra: &[&str], data: &std::path::Path) -> Self {
        Self::start_with(std::path::Path::new(SAMPLE), data, extra)
    }

    /// Serves `config` on a free port, and reads the port from the log.
    pub fn start_with(config: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--port", "0", "--config"])
            .arg(config)
            .arg("--data")
            .arg(data)
            .args(extra);
        Self::spawn(command)
    }

    /// Runs `command` (a `starfish serve`) and reads the port it listens on from its log.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                break digits.parse().unwrap();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        let (closed, log_closed) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in lines {}
            let _ = closed.send(());
        });
        Self {
            child,
            port,
            log_closed,
        }
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.child.wait().unwrap()
    }

    fn signal(&mut self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server as a crash would (SIGKILL): nothing runs on the way out.
    pub fn kill(mut self) {
        self.signal("-KILL");
        self.child.wait().unwrap();
    }

    /// Waits (at most 15 s) for the server to exit by itself, after a signal the test
    /// sent.
    pub fn terminate_waited(mut self) -> std::process::ExitStatus {
        self.log_closed
            .recv_timeout(std::time::Duration::from_secs(15))
            .expect("the server exits");
        self.child.wait().unwrap()
    }

    /// Serves the sample config from the memory store with `extra` flags and `env`.
    pub fn memory(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(BIN);
        command
            .args([
                "serve", "--store", "memory", "--port", "0", "--config", SAMPLE,
            ])
            .args(extra)
            .envs(env.iter().copied());
        Self::spawn(command)
    }

    /// Sends one request; returns the status, the lower-cased header lines and the body.
    pub fn send(&self, head: &str, body: &str) -> (u16, Vec<String>, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "{head}\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(response[..end].to_vec()).unwrap();
        let status = head[9..12].parse().unwrap();
        let headers = head.lines().skip(1).map(str::to_ascii_lowercase).collect();
        (status, headers, response[end + 4..].to_vec())
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (at most 10 s) until `found` says yes: for files a running server writes
/// to the filesystem store, whose journal is written out within a second.
pub fn eventually(mut found: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if found() {
            return true;
        }
        std::thread::yield_now();
    }
    found()
}

impl Drop for Server {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return; // already exited (and reaped)
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
