//! The whole router: arbitrary method, path, headers and body, several requests in a
//! row on one memory store, against a config that uses every feature. No request may
//! panic or be answered with a 5xx (the memory store never fails).
//!
//! Input: requests separated by a `0xFF` byte. Each is `METHOD PATH` on the first
//! line, then `name: value` header lines up to an empty line, then the body.
#![no_main]

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{ConfigEndpoint, CorsSettings, SyncConfig, SyncOptions, create_sync_router};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

const T0: u64 = 1_767_225_600_000;

/// The conformance scenarios' config (tests/vectors/http-scenarios.json), so their
/// requests are seeds that pass authentication, plus collections for the features it
/// does not use.
const CONFIG: &str = r#"{
 "version": 1,
 "collections": [
  {
   "encryption": "none",
   "maxBodyBytes": 65536,
   "name": "notes",
   "storagePath": "users/{identity}/notes",
   "readRoles": [
    "self"
   ],
   "writeRoles": [
    "self"
   ]
  },
  {
   "encryption": "none",
   "maxBodyBytes": 256,
   "name": "settings",
   "storagePath": "users/{identity}/settings",
   "readRoles": [
    "self"
   ],
   "writeRoles": [
    "self"
   ]
  },
  {
   "encryption": "none",
   "maxBodyBytes": 65536,
   "name": "feed",
   "storagePath": "feed",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "device:root"
   ],
   "cacheDurationMs": 60000
  },
  {
   "encryption": "none",
   "maxBodyBytes": 65536,
   "name": "vault",
   "storagePath": "vault/{identity}",
   "readRoles": [
    "self"
   ],
   "writeRoles": [
    "self"
   ],
   "rootOnly": true
  },
  {
   "encryption": "none",
   "maxBodyBytes": 65536,
   "name": "events",
   "storagePath": "logs/{identity}/events",
   "readRoles": [
    "self"
   ],
   "writeRoles": [
    "self"
   ],
   "appendOnly": {
    "type": "by_timestamp"
   }
  },
  {
   "encryption": "none",
   "maxBodyBytes": 4096,
   "name": "avatars",
   "storagePath": "avatars/{identity}",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "self"
   ],
   "allowedMimeTypes": [
    "image/*"
   ]
  },
  {
   "encryption": "none",
   "maxBodyBytes": 65536,
   "name": "days",
   "storagePath": "diary/{identity}/{day}",
   "readRoles": [
    "self"
   ],
   "writeRoles": [
    "self"
   ],
   "listable": true
  },
  {
   "encryption": "none",
   "maxBodyBytes": 65536,
   "name": "profile",
   "storagePath": "p/{identity}",
   "bundle": "user",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "self"
   ]
  },
  {
   "encryption": "none",
   "maxBodyBytes": 65536,
   "name": "prefs",
   "storagePath": "p/{identity}",
   "bundle": "user",
   "readRoles": [
    "self"
   ],
   "writeRoles": [
    "self"
   ]
  },
  {
   "encryption": "none",
   "maxBodyBytes": 65536,
   "name": "limited",
   "storagePath": "lim/{identity}",
   "readRoles": [
    "self"
   ],
   "writeRoles": [
    "self"
   ],
   "rateLimit": {
    "push": {
     "windowMs": 60000,
     "maxRequests": 2
    }
   }
  },
  {
   "encryption": "none",
   "maxBodyBytes": 65536,
   "name": "typed",
   "storagePath": "typed/{identity}",
   "readRoles": [
    "self"
   ],
   "writeRoles": [
    "self"
   ],
   "objectSchema": {
    "type": "object",
    "properties": {
     "n": {
      "type": "number"
     }
    },
    "required": [
     "n"
    ]
   }
  },
  {
   "encryption": "none",
   "maxBodyBytes": 65536,
   "name": "inbox",
   "storagePath": "inbox/{identity}",
   "readRoles": [
    "self"
   ],
   "writeRoles": [
    "self"
   ],
   "pushOnly": true
  },
  {
   "name": "docs",
   "storagePath": "docs/{id}",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "public"
   ],
   "listable": true,
   "maxBodyBytes": 2048,
   "cacheDurationMs": 60000,
   "fieldPermissions": {
    "secret": {
     "readRoles": [
      "admin"
     ],
     "writeRoles": [
      "admin"
     ]
    }
   }
  },
  {
   "name": "dnotes",
   "storagePath": "docs/{id}/{note}",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "public"
   ],
   "ttlMs": 1000
  },
  {
   "name": "dkeyring",
   "storagePath": "docs/{id}/_keyring",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "public"
   ]
  },
  {
   "name": "log",
   "storagePath": "log/{id}",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "public"
   ],
   "appendOnly": {
    "type": "by_timestamp",
    "requireAuthorSignature": false,
    "chunkSize": 3
   }
  },
  {
   "name": "flat",
   "storagePath": "flat/{id}",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "public"
   ],
   "appendOnly": {
    "requireAuthorSignature": false,
    "maxItems": 6,
    "maxPullLimit": 4,
    "allowFull": false,
    "maxCheckpointAgeMs": 3600000,
    "field": "entries"
   }
  },
  {
   "name": "fire",
   "storagePath": "fire/{id}",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "public"
   ],
   "appendOnly": {
    "persist": false,
    "requireAuthorSignature": false
   }
  },
  {
   "name": "pics",
   "storagePath": "pics/{id}",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "public"
   ],
   "allowedMimeTypes": [
    "image/*",
    "text/plain"
   ],
   "maxBodyBytes": 1024
  },
  {
   "name": "a",
   "storagePath": "b/{id}",
   "bundle": "bb",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "public"
   ]
  },
  {
   "name": "c",
   "storagePath": "b/{id}",
   "bundle": "bb",
   "readRoles": [
    "public"
   ],
   "writeRoles": [
    "public"
   ]
  }
 ],
 "namespaces": {
  "acme": {
   "collections": [
    {
     "encryption": "none",
     "maxBodyBytes": 65536,
     "name": "notes",
     "storagePath": "users/{identity}/notes",
     "readRoles": [
      "self"
     ],
     "writeRoles": [
      "self"
     ]
    },
    {
     "name": "docs",
     "storagePath": "acme/{id}",
     "readRoles": [
      "public"
     ],
     "writeRoles": [
      "public"
     ]
    }
   ],
   "restrictions": [
    {
     "mode": "deny",
     "identities": [
      "24aa2a5589edcb57fea0be3552f065de"
     ]
    }
   ]
  }
 }
}"#;

fn config() -> &'static SyncConfig {
    static CONFIG_ONCE: OnceLock<SyncConfig> = OnceLock::new();
    CONFIG_ONCE.get_or_init(|| SyncConfig::from_json_str(CONFIG).expect("the fuzz config loads"))
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let options = SyncOptions::new(config().clone(), DocStore::memory())
        .with_clock(Arc::new(ManualClock::new(T0)))
        .with_config_endpoint(ConfigEndpoint::RoleFiltered)
        .with_cors(CorsSettings::origins(["https://app.example"]));
    let router = create_sync_router(options).expect("the fuzz router builds");
    runtime().block_on(async {
        for raw in data.split(|b| *b == 0xFF).take(4) {
            let Some(request) = request(raw) else {
                continue;
            };
            let shown = format!("{} {}", request.method(), request.uri());
            let response = match router.clone().oneshot(request).await {
                Ok(r) => r,
                Err(e) => match e {},
            };
            let status = response.status();
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            assert!(
                !status.is_server_error(),
                "{shown} answered {status}: {:?}",
                body.map(|b| String::from_utf8_lossy(&b).into_owned())
            );
        }
    });
});

fn request(raw: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match raw.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&raw[..i], &raw[i + 2..]),
        None => (raw, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|b| *b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let uri = std::str::from_utf8(&first[space + 1..]).ok()?;
    let mut builder = Request::builder().method(method).uri(uri);
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body.to_vec())).ok()
}
