//! S3-compatible buckets: [`S3Settings`] and [`DocStore::s3`].

use super::{Capabilities, DocStore, StoreError};
use futures::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    ClientConfigKey, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    RetryConfig,
};
use std::sync::Arc;

/// Where an S3-compatible bucket is and how to reach it, for [`DocStore::s3`].
///
/// Start from [`S3Settings::from_env`] (the standard `AWS_*` variables) or
/// [`S3Settings::default`] (nothing from the environment), then set what you want to
/// override:
///
/// ```no_run
/// use starfish_store::{DocStore, S3Settings};
///
/// # fn run() -> Result<(), starfish_store::StoreError> {
/// let mut s3 = S3Settings::from_env();
/// s3.bucket = Some("my-documents".into());
/// s3.endpoint = Some("http://127.0.0.1:9000".into()); // MinIO, say: http is implied
/// s3.region = Some("us-east-1".into());
/// let store = DocStore::s3(s3)?;
/// # Ok(()) }
/// ```
///
/// Credentials are not fields of their own beyond the static keys: with no access key,
/// the store uses the AWS credential chain (web identity token, container
/// credentials, instance metadata), configured by the `AWS_*` variables when
/// [`Self::inherit_env`] is set. Its `Debug` output masks the secret key and the
/// session token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
pub struct S3Settings {
    /// The bucket (`AWS_BUCKET_NAME`). Required.
    pub bucket: Option<String>,
    /// The endpoint of an S3-compatible service (`AWS_ENDPOINT_URL_S3`, or
    /// `AWS_ENDPOINT`); `None` is AWS itself. An `http://` endpoint allows plain HTTP.
    pub endpoint: Option<String>,
    /// The region (`AWS_REGION`, or `AWS_DEFAULT_REGION`); `None` is `us-east-1`.
    pub region: Option<String>,
    /// Path-style requests (`https://endpoint/bucket/key`), as S3-compatible servers
    /// usually want; `false` is virtual-hosted style (`https://bucket.endpoint/key`,
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`). Default `true`.
    pub path_style: bool,
    /// Allow plain HTTP (`AWS_ALLOW_HTTP`). An `http://` endpoint allows it anyway.
    pub allow_http: bool,
    /// A static access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// The secret of [`Self::access_key_id`] (`AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials (`AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
    /// Also apply every other `AWS_*` variable that object_store knows (credential
    /// sources such as `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN` or
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, checksums, encryption, ...) when the
    /// store is built. A field left `None` then keeps the environment's value.
    pub inherit_env: bool,
}

impl Default for S3Settings {
    /// Nothing from the environment: path-style, HTTPS only, the credential chain.
    fn default() -> Self {
        Self {
            bucket: None,
            endpoint: None,
            region: None,
            path_style: true,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            inherit_env: false,
        }
    }
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |v: &Option<String>| v.as_ref().map(|_| "********");
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &masked(&self.secret_access_key))
            .field("session_token", &masked(&self.session_token))
            .field("inherit_env", &self.inherit_env)
            .finish()
    }
}

impl S3Settings {
    /// The settings the standard `AWS_*` environment variables describe, read now, with
    /// [`Self::inherit_env`] set so the rest of them apply too.
    pub fn from_env() -> Self {
        Self::from_builder(&AmazonS3Builder::from_env())
    }

    fn from_builder(env: &AmazonS3Builder) -> Self {
        let value = |key: AmazonS3ConfigKey| env.get_config_value(&key);
        let truthy = |key: AmazonS3ConfigKey| value(key).is_some_and(|v| v == "true");
        Self {
            bucket: value(AmazonS3ConfigKey::Bucket),
            endpoint: value(AmazonS3ConfigKey::S3Endpoint)
                .or_else(|| value(AmazonS3ConfigKey::Endpoint)),
            region: value(AmazonS3ConfigKey::Region),
            path_style: !truthy(AmazonS3ConfigKey::VirtualHostedStyleRequest),
            allow_http: truthy(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)),
            access_key_id: value(AmazonS3ConfigKey::AccessKeyId),
            secret_access_key: value(AmazonS3ConfigKey::SecretAccessKey),
            session_token: value(AmazonS3ConfigKey::Token),
            inherit_env: true,
        }
    }

    /// True when requests may go over plain HTTP: [`Self::allow_http`], or an
    /// `http://` endpoint.
    pub fn http_allowed(&self) -> bool {
        self.allow_http
            || self
                .endpoint
                .as_deref()
                .is_some_and(|e| e.len() >= 7 && e[..7].eq_ignore_ascii_case("http://"))
    }

    fn builder(&self) -> AmazonS3Builder {
        let mut b = if self.inherit_env {
            AmazonS3Builder::from_env()
        } else {
            AmazonS3Builder::new()
        };
        if let Some(bucket) = &self.bucket {
            b = b.with_bucket_name(bucket);
        }
        if let Some(endpoint) = &self.endpoint {
            // `AWS_ENDPOINT_URL_S3` would win over a plain endpoint: set both.
            b = b
                .with_endpoint(endpoint)
                .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
        }
        if let Some(region) = &self.region {
            b = b.with_region(region);
        }
        if let Some(id) = &self.access_key_id {
            b = b.with_access_key_id(id);
        }
        if let Some(secret) = &self.secret_access_key {
            b = b.with_secret_access_key(secret);
        }
        if let Some(token) = &self.session_token {
            b = b.with_token(token);
        }
        b.with_virtual_hosted_style_request(!self.path_style)
            .with_allow_http(self.http_allowed())
            .with_conditional_put(S3ConditionalPut::ETagMatch)
    }
}

impl DocStore {
    /// An S3-compatible bucket described by `settings`, with conditional writes
    /// (`If-Match` / `If-None-Match`), so several server processes may share it.
    ///
    /// # Errors
    /// When the settings do not describe a bucket (no bucket name, a bad endpoint, ...).
    #[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
    pub fn s3(settings: S3Settings) -> Result<Self, StoreError> {
        let builder = settings.builder();
        let s3 = OnceForConditional {
            retried: builder.clone().with_retry(bounded_retries()).build()?,
            once: builder.with_retry(no_retries()).build()?,
        };
        Ok(Self::new(
            Arc::new(s3),
            Capabilities {
                conditional_update: true,
                attributes: true,
            },
        ))
    }

    /// An S3-compatible store configured from `AWS_*` environment variables
    /// (`AWS_BUCKET_NAME`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, ...), with conditional
    /// writes: [`DocStore::s3`] of [`S3Settings::from_env`].
    ///
    /// # Errors
    /// When the environment does not describe a bucket.
    #[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
    pub fn s3_from_env() -> Result<Self, StoreError> {
        Self::s3(S3Settings::from_env())
    }
}

/// Retries of reads and plain writes: a few, within a few seconds, so that a store
/// that is down is answered `503` soon rather than after the request's own timeout.
fn bounded_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(5),
        ..RetryConfig::default()
    }
}

/// No retries: for conditional writes.
fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    }
}

/// A bucket whose conditional writes (`PutMode::Create`, `PutMode::Update`) are
/// sent once. A repeat of one that took effect before its answer was lost (a cut
/// connection) would be refused by its own condition and reported as a conflict:
/// the client would be told `409` for a write that was made, and an append would be
/// made twice. Sent once, such a write fails with a store error (`503`: the outcome
/// is unknown, and the client reads before it writes again). Everything else is
/// retried, a little ([`bounded_retries`]).
#[derive(Debug)]
struct OnceForConditional {
    retried: AmazonS3,
    once: AmazonS3,
}

impl std::fmt::Display for OnceForConditional {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.retried.fmt(f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for OnceForConditional {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match opts.mode {
            PutMode::Overwrite => self.retried.put_opts(location, payload, opts).await,
            PutMode::Create | PutMode::Update(_) => {
                self.once.put_opts(location, payload, opts).await
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.retried.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.retried.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.retried.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.retried.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.retried.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.retried.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.retried.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.retried.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.retried.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder_value(s: &S3Settings, key: AmazonS3ConfigKey) -> Option<String> {
        s.builder().get_config_value(&key)
    }

    #[test]
    fn explicit_settings_reach_the_builder() {
        let mut s = S3Settings {
            bucket: Some("docs".into()),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("eu-west-3".into()),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI".into()),
            ..S3Settings::default()
        };
        let get = |k| builder_value(&s, k);
        assert_eq!(get(AmazonS3ConfigKey::Bucket).as_deref(), Some("docs"));
        assert_eq!(
            get(AmazonS3ConfigKey::S3Endpoint).as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(get(AmazonS3ConfigKey::Region).as_deref(), Some("eu-west-3"));
        assert_eq!(
            get(AmazonS3ConfigKey::VirtualHostedStyleRequest).as_deref(),
            Some("false")
        );
        assert_eq!(
            get(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("true"),
            "an http:// endpoint allows http"
        );
        assert_eq!(
            get(AmazonS3ConfigKey::ConditionalPut).as_deref(),
            Some("etag")
        );
        DocStore::s3(s.clone()).unwrap();

        s.endpoint = Some("https://s3.example.test".into());
        s.path_style = false;
        assert_eq!(
            builder_value(&s, AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("false")
        );
        assert_eq!(
            builder_value(&s, AmazonS3ConfigKey::VirtualHostedStyleRequest).as_deref(),
            Some("true")
        );
    }

    #[test]
    fn a_bucket_is_required_and_debug_masks_secrets() {
        assert!(DocStore::s3(S3Settings::default()).is_err());
        let s = S3Settings {
            secret_access_key: Some("very-secret-value".into()),
            session_token: Some("very-secret-token".into()),
            ..S3Settings::default()
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("********"), "{shown}");
    }

    #[test]
    fn the_environment_is_read_through_the_builder() {
        let env = AmazonS3Builder::new()
            .with_config(AmazonS3ConfigKey::Bucket, "b")
            .with_config(AmazonS3ConfigKey::Endpoint, "http://e")
            .with_config(AmazonS3ConfigKey::DefaultRegion, "r")
            .with_config(AmazonS3ConfigKey::VirtualHostedStyleRequest, "true")
            .with_config(AmazonS3ConfigKey::Token, "t");
        let s = S3Settings::from_builder(&env);
        assert_eq!(s.bucket.as_deref(), Some("b"));
        assert_eq!(s.endpoint.as_deref(), Some("http://e"));
        assert_eq!(s.region.as_deref(), Some("r"));
        assert!(!s.path_style);
        assert!(!s.allow_http);
        assert!(s.http_allowed());
        assert_eq!(s.session_token.as_deref(), Some("t"));
        assert!(s.inherit_env);
    }
}
