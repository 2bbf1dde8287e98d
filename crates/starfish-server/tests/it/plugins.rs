//! Server plugins: each hook runs at its place of the pipeline, in the order the
//! plugins were registered, the first that does not proceed decides, and a failure
//! answers as the reference's does (`after_write`'s logged, the others' `500`).

use crate::common;

use axum::Router;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use common::*;
use futures::FutureExt as _;
use serde_json::json;
use starfish_server::access::{AccessRequest, HookError};
use starfish_server::auth::ManualClock;
use starfish_server::hooks::{
    HookContext, HookFuture, Plugin, Plugins, PullAnswer, PullDecision, PushContext, PushDecision,
    WriteEvent,
};
use starfish_server::store::DocStore;
use starfish_server::{SyncOptions, create_sync_router};
use std::sync::{Arc, Mutex};

/// What each hook of a [`Recorder`] answers (`None`: proceed; `Err`: fails).
#[derive(Default, Clone)]
struct Answers {
    before_pull: Option<Result<PullDecision, HookError>>,
    intercept_pull: Option<Result<PullAnswer, HookError>>,
    intercept_push: Option<Result<PushDecision, HookError>>,
    authorize: Option<bool>,
    after_write_fails: bool,
}

/// A plugin that writes each call into a log shared with the others.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    answers: Answers,
}

impl Recorder {
    fn note(&self, what: String) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}.{what}", self.name));
    }
}

impl Plugin for Recorder {
    fn name(&self) -> &str {
        self.name
    }

    fn authorize<'a>(&'a self, request: &'a AccessRequest<'a>) -> Option<HookFuture<'a, bool>> {
        self.note(format!("authorize {}", request.key()));
        let allow = self.answers.authorize.unwrap_or(true);
        Some(async move { Ok(allow) }.boxed())
    }

    fn before_pull<'a>(&'a self, ctx: &'a HookContext<'a>) -> Option<HookFuture<'a, PullDecision>> {
        self.note(format!("before_pull {} {}", ctx.collection, ctx.key));
        let answer = self
            .answers
            .before_pull
            .clone()
            .unwrap_or(Ok(PullDecision::Proceed));
        Some(async move { answer }.boxed())
    }

    fn intercept_pull<'a>(
        &'a self,
        ctx: &'a HookContext<'a>,
    ) -> Option<HookFuture<'a, PullAnswer>> {
        self.note(format!("intercept_pull {}", ctx.key));
        let answer = self
            .answers
            .intercept_pull
            .clone()
            .unwrap_or(Ok(PullAnswer::Proceed));
        Some(async move { answer }.boxed())
    }

    fn intercept_push<'a>(
        &'a self,
        ctx: &'a PushContext<'a>,
    ) -> Option<HookFuture<'a, PushDecision>> {
        let body = String::from_utf8_lossy(ctx.raw_body).into_owned();
        self.note(format!("intercept_push {} {body}", ctx.request.key));
        let answer = self
            .answers
            .intercept_push
            .clone()
            .unwrap_or(Ok(PushDecision::Proceed));
        Some(async move { answer }.boxed())
    }

    fn after_write(&self, event: &WriteEvent) -> Result<(), HookError> {
        self.note(format!("after_write {} {:?}", event.key, event.param("id")));
        if self.answers.after_write_fails {
            return Err(HookError("the queue is down".into()));
        }
        Ok(())
    }

    fn shutdown(&self) -> Option<futures::future::BoxFuture<'_, ()>> {
        Some(async move { self.note("shutdown".into()) }.boxed())
    }
}

type Log = Arc<Mutex<Vec<String>>>;

/// A router over `store` with plugins A and B (answering as told), and their log.
fn with_plugins(store: &DocStore, a: Answers, b: Answers) -> (Router, Log, Plugins) {
    let log: Log = Arc::default();
    let plugin = |name, answers| -> Arc<dyn Plugin> {
        Arc::new(Recorder {
            name,
            log: log.clone(),
            answers,
        })
    };
    let (a, b) = (plugin("A", a), plugin("B", b));
    let app = create_sync_router(
        SyncOptions::new(config(), store.clone())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_plugin(a.clone())
            .with_plugin(b.clone()),
    )
    .unwrap();
    (app, log, Plugins::new(vec![a, b]))
}

fn taken(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test]
async fn each_hook_runs_at_its_place_in_the_order_plugins_were_registered() {
    let store = DocStore::memory();
    let (app, log, plugins) = with_plugins(&store, Answers::default(), Answers::default());
    let (status, _) = push_doc(&app, "/push/docs/a", json!({"n": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    let pushed = r#"{"data":{"n":1},"baseHash":null}"#;
    assert_eq!(
        taken(&log),
        [
            "A.authorize docs/a".to_owned(),
            "B.authorize docs/a".to_owned(),
            format!("A.intercept_push docs/a {pushed}"),
            format!("B.intercept_push docs/a {pushed}"),
            "A.after_write docs/a Some(\"a\")".to_owned(),
            "B.after_write docs/a Some(\"a\")".to_owned(),
        ]
    );
    let res = send(&app, get("/pull/docs/a")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_body(res).await["data"], json!({"n": 1}));
    assert_eq!(
        taken(&log),
        [
            "A.authorize docs/a",
            "B.authorize docs/a",
            "A.before_pull docs docs/a",
            "B.before_pull docs docs/a",
            "A.intercept_pull docs/a",
            "B.intercept_pull docs/a",
        ]
    );
    plugins.shutdown().await;
    assert_eq!(taken(&log), ["A.shutdown", "B.shutdown"]);
}

#[tokio::test]
async fn hooks_run_after_authorization_never_for_a_refused_caller() {
    let store = DocStore::memory();
    let (app, log, _) = with_plugins(&store, Answers::default(), Answers::default());
    // `notes` is the caller's own: an anonymous caller is refused before any hook.
    let res = send(&app, get("/pull/users/u1/notes")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = send(&app, push("/push/users/u1/notes", &json!({"data": {}}))).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Nor a signed caller whose signature fails.
    let u = user(1);
    let mut req = Signed::get(&format!("/pull/users/{}/notes", u.id), &u).build();
    req.headers_mut()
        .insert("x-starfish-sig", "AAAA".parse().unwrap());
    assert_eq!(send(&app, req).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(taken(&log), Vec::<String>::new());
}

#[tokio::test]
async fn the_first_before_pull_that_refuses_answers_and_the_next_is_not_asked() {
    let store = DocStore::memory();
    let refuse = Answers {
        before_pull: Some(Ok(PullDecision::Reject {
            status: StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            error: "Withheld".into(),
        })),
        ..Answers::default()
    };
    let (app, log, _) = with_plugins(&store, refuse, Answers::default());
    assert_error(
        send(&app, get("/pull/docs/a")).await,
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
        "Withheld",
    )
    .await;
    assert_eq!(
        taken(&log),
        [
            "A.authorize docs/a",
            "B.authorize docs/a",
            "A.before_pull docs docs/a"
        ]
    );
}

#[tokio::test]
async fn an_intercepted_pull_answers_bytes_with_their_etag_and_304() {
    let store = DocStore::memory();
    let parquet = Bytes::from_static(b"PAR1\x00\x01\x02\xffPAR1");
    let answer = Answers {
        intercept_pull: Some(Ok(PullAnswer::Respond {
            status: StatusCode::OK,
            body: parquet.clone(),
            content_type: "application/vnd.apache.parquet".into(),
        })),
        ..Answers::default()
    };
    let (app, log, _) = with_plugins(&store, Answers::default(), answer);
    let res = send(&app, get("/pull/docs/events")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    let etag = res.headers()["etag"].clone();
    assert_eq!(
        etag.to_str().unwrap(),
        format!("\"{}\"", starfish_protocol::sha256_hex(&parquet))
    );
    // The collection's caching (docs: cacheDurationMs 60000), but private: the
    // plugin saw who asked.
    assert_eq!(res.headers()["cache-control"], "private, max-age=60");
    assert_eq!(body_bytes(res).await, parquet);
    assert!(taken(&log).contains(&"B.intercept_pull docs/events".to_owned()));
    let again = Request::get("/pull/docs/events")
        .header("if-none-match", etag)
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(send(&app, again).await.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn an_intercept_push_refusal_stores_nothing_and_tells_no_one() {
    let store = DocStore::memory();
    let refuse = Answers {
        intercept_push: Some(Ok(PushDecision::Reject {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: "Spam".into(),
        })),
        ..Answers::default()
    };
    let (app, log, _) = with_plugins(&store, refuse, Answers::default());
    let res = send(&app, push("/push/docs/a", &json!({"data": {"n": 1}}))).await;
    assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "Spam").await;
    assert_eq!(stored(&store, "docs/a").await, None);
    let log = taken(&log);
    assert!(
        log.iter()
            .all(|l| !l.contains("after_write") && !l.starts_with("B.intercept")),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_transformed_push_is_stored_as_transformed_and_the_next_plugin_sees_it() {
    let store = DocStore::memory();
    let transform = Answers {
        intercept_push: Some(Ok(PushDecision::Transform(Bytes::from_static(
            br#"{"data":{"n":2,"by":"A"}}"#,
        )))),
        ..Answers::default()
    };
    let (app, log, _) = with_plugins(&store, transform, Answers::default());
    let (status, _) = push_doc(&app, "/push/docs/a", json!({"n": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stored(&store, "docs/a").await.unwrap()["data"],
        json!({"n": 2, "by": "A"})
    );
    assert!(
        taken(&log).contains(&r#"B.intercept_push docs/a {"data":{"n":2,"by":"A"}}"#.to_owned())
    );
    // A transform into something that is not a push is refused as if sent so.
    let bad = Answers {
        intercept_push: Some(Ok(PushDecision::Transform(Bytes::from_static(b"[1]")))),
        ..Answers::default()
    };
    let (app, _, _) = with_plugins(&store, bad, Answers::default());
    let res = send(&app, push("/push/docs/b", &json!({"data": {"n": 1}}))).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stored(&store, "docs/b").await, None);
}

#[tokio::test]
async fn a_push_answered_by_a_plugin_is_answered_as_it_says_and_not_stored() {
    let store = DocStore::memory();
    let respond = Answers {
        intercept_push: Some(Ok(PushDecision::Respond {
            status: StatusCode::ACCEPTED,
            body: json!({"proxied": true}),
        })),
        ..Answers::default()
    };
    let (app, log, _) = with_plugins(&store, respond, Answers::default());
    let res = send(&app, push("/push/docs/a", &json!({"data": {"n": 1}}))).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(json_body(res).await, json!({"proxied": true}));
    assert_eq!(stored(&store, "docs/a").await, None);
    assert!(taken(&log).iter().all(|l| !l.contains("after_write")));
}

#[tokio::test]
async fn a_failing_hook_answers_500_but_a_failing_after_write_is_only_logged() {
    let store = DocStore::memory();
    let failing = Answers {
        before_pull: Some(Err(HookError("replica unreachable".into()))),
        intercept_push: Some(Err(HookError("scanner down".into()))),
        after_write_fails: true,
        ..Answers::default()
    };
    let (app, log, _) = with_plugins(&store, failing.clone(), Answers::default());
    let res = send(&app, get("/pull/docs/a")).await;
    assert_error(
        res,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal Server Error",
    )
    .await;
    let res = send(&app, push("/push/docs/a", &json!({"data": {"n": 1}}))).await;
    assert_error(
        res,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal Server Error",
    )
    .await;
    assert_eq!(stored(&store, "docs/a").await, None);
    taken(&log);
    // after_write fails in A: the write stands, and B is still told.
    let only_after = Answers {
        after_write_fails: true,
        ..Answers::default()
    };
    let (app, log, _) = with_plugins(&store, only_after, Answers::default());
    let (status, _) = push_doc(&app, "/push/docs/a", json!({"n": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(stored(&store, "docs/a").await.is_some());
    assert!(taken(&log).contains(&"B.after_write docs/a Some(\"a\")".to_owned()));
}

#[tokio::test]
async fn a_plugins_authorize_refusal_answers_403() {
    let store = DocStore::memory();
    let deny = Answers {
        authorize: Some(false),
        ..Answers::default()
    };
    let (app, log, _) = with_plugins(&store, Answers::default(), deny);
    assert_eq!(
        send(&app, get("/pull/docs/a")).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(taken(&log), ["A.authorize docs/a", "B.authorize docs/a"]);
}

#[tokio::test]
async fn a_before_pull_refusal_hides_a_listed_value_and_a_transform_keeps_the_size_limit() {
    let store = DocStore::memory();
    let config = starfish_server::SyncConfig::from_value(json!({
        "version": 1,
        "collections": [{"name": "cards", "storagePath": "cards/{id}", "readRoles": ["public"],
                         "writeRoles": ["public"], "listable": true, "maxBodyBytes": 256}]
    }))
    .unwrap();
    struct HideB;
    impl Plugin for HideB {
        fn name(&self) -> &str {
            "hide-b"
        }
        fn before_pull<'a>(
            &'a self,
            ctx: &'a HookContext<'a>,
        ) -> Option<HookFuture<'a, PullDecision>> {
            (ctx.key == "cards/b").then(|| {
                async {
                    Ok(PullDecision::Reject {
                        status: StatusCode::FORBIDDEN,
                        error: "hidden".into(),
                    })
                }
                .boxed()
            })
        }
        fn intercept_push<'a>(
            &'a self,
            ctx: &'a PushContext<'a>,
        ) -> Option<HookFuture<'a, PushDecision>> {
            // Pads a push to `cards/big` past the collection's 256 bytes.
            (ctx.request.key == "cards/big").then(|| {
                let big = format!(r#"{{"data":{{"pad":"{}"}}}}"#, "x".repeat(300));
                async move { Ok(PushDecision::Transform(Bytes::from(big))) }.boxed()
            })
        }
    }
    let app = create_sync_router(
        SyncOptions::new(config, store.clone())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_plugin(Arc::new(HideB)),
    )
    .unwrap();
    for id in ["a", "b"] {
        let (status, _) =
            push_doc(&app, &format!("/push/cards/{id}"), json!({"id": id}), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let page = json_body(send(&app, get("/list/cards?include=values")).await).await;
    assert_eq!(page["items"], json!(["a", "b"]));
    assert_eq!(page["values"][0]["data"], json!({"id": "a"}));
    assert_eq!(page["values"][1], serde_json::Value::Null, "{page}");
    let res = send(&app, push("/push/cards/big", &json!({"data": {}}))).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(stored(&store, "cards/big").await, None);
}
