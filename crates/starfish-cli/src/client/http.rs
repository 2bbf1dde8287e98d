//! One HTTP/1.1 request to a server over plain TCP (hyper's client connection), and
//! the body of its answer, whole or frame by frame.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Where a server is: `http://host[:port][/base]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// `host:port` as sent in `Host` (and signed).
    pub(crate) authority: String,
    /// What to connect to: the authority, with port 80 when none is given.
    address: String,
    /// The path the routes are mounted under (`""` or `/v1`), without a final `/`.
    pub(crate) base: String,
}

impl ServerUrl {
    /// Reads `url`.
    ///
    /// # Errors
    /// Not `http://` (this client speaks plain HTTP; put TLS in front of it with a
    /// proxy of your own), or no host.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("--url {url:?}: expected http://host[:port][/base-path] (plain HTTP only)")
        })?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("--url {url:?}: no host"));
        }
        // `[::1]:9000` or `host:9000`; `[::1]` alone has no port.
        let has_port = match authority.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => authority.contains(':'),
        };
        let address = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority: authority.to_owned(),
            address,
            base: base.to_owned(),
        })
    }
}

/// Sends one request; the answer's body is left to read.
///
/// # Errors
/// The connection or the exchange failed (the text says which).
pub(crate) async fn send(
    server: &ServerUrl,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Response<Incoming>, String> {
    let stream = tokio::net::TcpStream::connect(&server.address)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", server.address))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("cannot talk to {}: {e}", server.address))?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(hyper::header::HOST, &server.authority);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !body.is_empty() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("no answer from {}: {e}", server.address))
}

/// The status and whole body of an answer.
///
/// # Errors
/// The body could not be read to its end.
pub(crate) async fn whole(response: Response<Incoming>) -> Result<(u16, Bytes), String> {
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("cannot read the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// The next piece of an answer's body; `None` at its end.
///
/// # Errors
/// The connection failed mid-body.
pub(crate) async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, String> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(format!("the stream broke: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_the_authority_it_signs_and_the_address_it_connects_to() {
        let url = ServerUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (
                url.authority.as_str(),
                url.address.as_str(),
                url.base.as_str()
            ),
            ("127.0.0.1:8080", "127.0.0.1:8080", "")
        );
        let url = ServerUrl::parse("http://sync.example.com/v1/").unwrap();
        assert_eq!(
            (
                url.authority.as_str(),
                url.address.as_str(),
                url.base.as_str()
            ),
            ("sync.example.com", "sync.example.com:80", "/v1")
        );
        let url = ServerUrl::parse("http://[::1]").unwrap();
        assert_eq!(url.address, "[::1]:80");
        let url = ServerUrl::parse("http://[::1]:9000/x").unwrap();
        assert_eq!(
            (url.address.as_str(), url.base.as_str()),
            ("[::1]:9000", "/x")
        );
        assert!(ServerUrl::parse("https://example.com").is_err());
        assert!(ServerUrl::parse("http:///v1").is_err());
    }
}
