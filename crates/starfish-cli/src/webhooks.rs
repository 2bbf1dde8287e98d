//! The `server: webhooks:` section: webhook ingress routes, `POST /webhook/<id>`
//! (docs/extensions.md). Secrets come from an environment variable or a file,
//! never from the config file:
//!
//! ```yaml
//! server:
//!   webhooks:
//!     ci:
//!       target: /push/inbox/{id}          # or /<namespace>/push/...
//!       secretEnv: CI_WEBHOOK_SECRET      # or secretFile: ci.secret
//!       timestampHeader: x-webhook-timestamp   # sign `ts.body`, 300 s tolerance
//!       identity: bot.identity            # push as this identity (starfish identity new)
//!       transform:
//!         data: {status: /build/status, repo: /repository/name}   # or data: /message
//!         params: {id: /delivery}
//! ```

use serde::{Deserialize, Serialize};
use starfish_server::webhooks::{Transform, WebhookRoute, Webhooks};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The section: each webhook by its id.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
pub(crate) struct WebhooksSection(BTreeMap<String, WebhookSection>);

/// One webhook.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct WebhookSection {
    target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_env: Option<String>,
    /// Relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_file: Option<PathBuf>,
    /// Refused: a secret is never in the config file.
    #[serde(default, skip_serializing)]
    secret: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tolerance_seconds: Option<u64>,
    /// An identity file (`starfish identity new`), relative to the config file's
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<PathBuf>,
    transform: serde_json::Value,
}

impl WebhooksSection {
    /// Each path (secret files, identities) through `whole` (relative to the
    /// config file's directory made whole).
    pub(crate) fn with_paths(mut self, whole: impl Fn(PathBuf) -> PathBuf) -> Self {
        for hook in self.0.values_mut() {
            hook.secret_file = hook.secret_file.take().map(&whole);
            hook.identity = hook.identity.take().map(&whole);
        }
        self
    }

    /// The routes, their secrets read.
    ///
    /// # Errors
    /// A secret in the config file, none or two sources for it, one that cannot
    /// be read or is empty, an identity file that cannot be read, a bad target or
    /// transform.
    pub(crate) fn build(&self) -> Result<Webhooks, String> {
        let mut webhooks = Webhooks::new();
        for (id, hook) in &self.0 {
            let route = hook
                .route()
                .map_err(|e| format!("server.webhooks.{id}: {e}"))?;
            webhooks = webhooks.with(id.clone(), route);
        }
        Ok(webhooks)
    }

    /// What `check-config` says of the webhooks: each built as `serve` would, but
    /// a secret that cannot be read here (an environment variable set only where
    /// the server runs, a file on its machine) is a warning, not an error. The
    /// number of webhooks, and the warnings.
    ///
    /// # Errors
    /// As [`Self::build`], but for secrets this machine cannot read.
    pub(crate) fn check(&self) -> Result<(usize, Vec<String>), String> {
        let mut warnings = Vec::new();
        for (id, hook) in &self.0 {
            let named = |e: String| format!("server.webhooks.{id}: {e}");
            if let Err(e) = hook.secret() {
                // Written in the file, none or two sources, or read and empty: an
                // error wherever it runs.
                let unreadable_here = hook.secret.is_none()
                    && hook.secret_env.is_some() != hook.secret_file.is_some()
                    && e != "the secret is empty";
                if !unreadable_here {
                    return Err(named(e));
                }
                warnings.push(named(format!(
                    "{e} (here; it must be where the server runs)"
                )));
            }
            hook.route_with("a secret to check the rest with")
                .map_err(named)?;
        }
        Ok((self.0.len(), warnings))
    }
}

impl WebhookSection {
    fn route(&self) -> Result<WebhookRoute, String> {
        let secret = self.secret()?;
        self.route_with(&secret)
    }

    /// The route with `secret`.
    fn route_with(&self, secret: &str) -> Result<WebhookRoute, String> {
        let transform = Transform::from_value(&self.transform)?;
        let mut route = WebhookRoute::new(&self.target, secret.as_bytes(), transform)?;
        if let Some(name) = &self.signature_header {
            route = route.with_signature_header(name)?;
        }
        if let Some(name) = &self.timestamp_header {
            route = route.with_timestamp_header(name, self.tolerance_seconds.unwrap_or(300))?;
        }
        if let Some(file) = &self.identity {
            route = route.with_identity(crate::client::read_identity(file)?);
        }
        Ok(route)
    }

    fn secret(&self) -> Result<String, String> {
        if self.secret.is_some() {
            return Err(
                "a secret is never in the config file: name it with secretEnv or secretFile".into(),
            );
        }
        let secret = match (&self.secret_env, &self.secret_file) {
            (Some(var), None) => {
                std::env::var(var).map_err(|_| format!("secretEnv: {var} is not set"))?
            }
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| format!("secretFile {}: {e}", file.display()))?,
            _ => return Err("one of secretEnv or secretFile".into()),
        };
        let secret = secret.trim().to_owned();
        if secret.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(secret)
    }
}
