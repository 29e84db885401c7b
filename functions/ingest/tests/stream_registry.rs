//! The stream registry through the ingest handler, against the real servers: admin routes
//! refuse callers the IAM authorizer did not verify; streams are created, given their own
//! catalogue, started and ended; `POST /reactions` takes only live streams and their emojis,
//! not while reactions are paused, and carries a stream's own fair-use limit to aggregate;
//! and a flood of made-up stream ids is refused with bounded MongoDB reads and no writes.

mod common;

use common::*;
use emostream_local::network::FaultProxy;
use emostream_tests::patience::{assert_bounded, eventually};
use emostream_tests::servers;
use emostream_tests::topic_reader::record_count;
use lambda_http::{Body, Request};
use mongodb::bson::doc;
use reactions::mongo::REQUEST_WRITE_LIMIT;
use serde_json::{Value, json};
use std::time::Instant;

/// A payload-v2 event as API Gateway sends it after its IAM authorizer verified the caller.
fn admin_request(method: &str, path: &str, body: Option<Value>) -> Request {
    let mut event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "test"},
            "requestId": "r",
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 0,
            "authorizer": {"iam": {"accessKey": "AKIDADMIN", "accountId": "000000000000",
                                    "userArn": "arn:aws:iam::000000000000:user/admin"}},
        },
        "isBase64Encoded": false,
    });
    if let Some(body) = body {
        event["body"] = Value::from(body.to_string());
    }
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

async fn call(setup: &Setup, request: Request) -> (u16, Value) {
    let response = setup.ingest.handle(request).await;
    (response.status().as_u16(), body_json(&response))
}

fn reaction(stream: &str, emoji: &str) -> Request {
    post_json(&json!({"stream_id": stream, "user_id": "u", "emoji": emoji}).to_string())
}

#[tokio::test]
async fn admin_routes_refuse_callers_the_authorizer_did_not_verify() {
    let setup = setup_with(&[]).await;
    let unsigned = [
        ("GET", "/admin/streams"),
        ("PUT", "/admin/streams/new-one"),
        ("POST", "/admin/streams/m/start"),
        ("POST", "/admin/streams/m/end"),
    ];
    for (method, path) in unsigned {
        let body = Body::Text(json!({"title": "t"}).to_string());
        let (status, body) = call(
            &setup,
            request(method, path, Some("application/json"), body),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}"
        );
    }
    let (status, _) = call(
        &setup,
        request("GET", "/streams/new-one", None, Body::Empty),
    )
    .await;
    assert_eq!(status, 404, "nothing was created");
    let (status, live) = call(&setup, request("GET", "/streams/m", None, Body::Empty)).await;
    assert_eq!(
        (status, live["status"].as_str()),
        (200, Some("live")),
        "nothing was ended"
    );
}

#[tokio::test]
async fn a_stream_is_registered_given_its_catalogue_started_and_ended() {
    let setup = setup_with(&[]).await;
    let path = "/admin/streams/cup-final";
    let emojis = json!([{"name": "goal", "glyph": "⚽"}, {"name": "red_card", "glyph": "🟥"}]);
    let (status, created) = call(
        &setup,
        admin_request(
            "PUT",
            path,
            Some(json!({"title": "Cup final", "emojis": emojis})),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "scheduled");
    assert_eq!(created["emojis"], emojis);

    // Scheduled: visible, not reactable, not listed as live.
    let (status, shown) = call(
        &setup,
        request("GET", "/streams/cup-final", None, Body::Empty),
    )
    .await;
    assert_eq!((status, shown["title"].as_str()), (200, Some("Cup final")));
    let (status, refused) = call(&setup, reaction("cup-final", "goal")).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"], "stream_not_live");
    assert_eq!(refused["status"], "scheduled");
    let (_, listed) = call(&setup, request("GET", "/streams", None, Body::Empty)).await;
    let live_ids: Vec<&str> = listed["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(!live_ids.contains(&"cup-final"), "{live_ids:?}");

    let (status, retitled) = call(
        &setup,
        admin_request("PUT", path, Some(json!({"title": "The cup final"}))),
    )
    .await;
    assert_eq!((status, retitled["emojis"].clone()), (200, emojis.clone()));

    let (status, live) = call(
        &setup,
        admin_request("POST", &format!("{path}/start"), None),
    )
    .await;
    assert_eq!((status, live["status"].as_str()), (200, Some("live")));
    let (_, listed) = call(&setup, request("GET", "/streams", None, Body::Empty)).await;
    assert!(
        listed["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == "cup-final")
    );

    // The stream's own emojis, by name or glyph; the default catalogue's are not its.
    assert_eq!(call(&setup, reaction("cup-final", "goal")).await.0, 202);
    assert_eq!(call(&setup, reaction("cup-final", "🟥")).await.0, 202);
    let (status, wrong) = call(&setup, reaction("cup-final", "fire")).await;
    assert_eq!(status, 400);
    assert_eq!(wrong["errors"][0]["field"], "emoji");
    assert_eq!(wrong["errors"][0]["rule"], "unknown_emoji");
    let batch = json!({"reactions": [
        {"stream_id": "m", "user_id": "u", "emoji": "fire"},
        {"stream_id": "cup-final", "user_id": "u", "emoji": "fire"},
    ]});
    let (status, wrong) = call(&setup, post_json(&batch.to_string())).await;
    assert_eq!(
        (status, wrong["errors"][0]["field"].as_str()),
        (400, Some("reactions[1].emoji"))
    );

    // A new catalogue applies to the next reaction.
    let (status, _) = call(
        &setup,
        admin_request(
            "PUT",
            path,
            Some(json!({"emojis": [{"name": "fire", "glyph": "🔥"}]})),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(call(&setup, reaction("cup-final", "fire")).await.0, 202);
    assert_eq!(call(&setup, reaction("cup-final", "goal")).await.0, 400);

    let (status, ended) = call(&setup, admin_request("POST", &format!("{path}/end"), None)).await;
    assert_eq!((status, ended["status"].as_str()), (200, Some("ended")));
    let (status, refused) = call(&setup, reaction("cup-final", "fire")).await;
    assert_eq!((status, refused["status"].as_str()), (409, Some("ended")));
    let (status, again) = call(
        &setup,
        admin_request("POST", &format!("{path}/start"), None),
    )
    .await;
    assert_eq!(
        (status, again["error"].as_str()),
        (409, Some("transition_refused"))
    );
    assert_eq!(
        record_count(&setup.kafka, &setup.topic),
        3,
        "only the 202s reached Kafka"
    );

    let (status, all) = call(&setup, admin_request("GET", "/admin/streams", None)).await;
    assert_eq!(status, 200);
    assert!(
        all["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == "cup-final" && s["status"] == "ended")
    );
}

#[tokio::test]
async fn admin_mistakes_get_field_named_errors() {
    let setup = setup_with(&[]).await;
    let cases = [
        (
            admin_request(
                "PUT",
                "/admin/streams/x",
                Some(json!({"emojis": [{"name": "a", "glyph": "⚽"}]})),
            ),
            400,
            "title",
        ),
        (
            admin_request("PUT", "/admin/streams/x", Some(json!({"title": ""}))),
            400,
            "title",
        ),
        (
            admin_request(
                "PUT",
                "/admin/streams/x",
                Some(json!({"title": "t", "emojis": [{"name": "Bad", "glyph": "⚽"}]})),
            ),
            400,
            "emojis",
        ),
        (
            admin_request(
                "PUT",
                "/admin/streams/bad%20id",
                Some(json!({"title": "t"})),
            ),
            400,
            "id",
        ),
        (
            admin_request("POST", "/admin/streams/ghost/start", None),
            404,
            "",
        ),
    ];
    for (request, status, field) in cases {
        let path = request.uri().path().to_owned();
        let (got, body) = call(&setup, request).await;
        assert_eq!(got, status, "{path}: {body}");
        if !field.is_empty() {
            assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
        }
    }
    let (status, _) = call(&setup, request("GET", "/streams/x", None, Body::Empty)).await;
    assert_eq!(status, 404, "no mistake created a stream");
}

#[tokio::test]
async fn a_flood_of_made_up_stream_ids_is_refused_with_bounded_reads_and_no_writes() {
    // The bound is one read per id per cache period; a long period keeps a slow machine's
    // run inside one.
    let setup = setup_with(&[("STREAM_CACHE_TTL_MS", "300000")]).await;
    let before = setup.ingest.registry_reads();
    let ids: Vec<String> = (0..5_000).map(|i| format!("made-up-{i}")).collect();
    // 10,000 requests: every id twice.
    for id in ids.iter().chain(&ids) {
        let (status, body) = call(&setup, reaction(id, "fire")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("unknown_stream")),
            "{id}"
        );
        assert_eq!(body["stream_id"], id.as_str());
    }
    // One body naming 500 made-up streams stops at the first.
    let items: Vec<Value> = (0..500)
        .map(|i| json!({"stream_id": format!("batch-{i}"), "user_id": "u", "emoji": "fire"}))
        .collect();
    let (status, _) = call(
        &setup,
        post_json(&json!({ "reactions": items }).to_string()),
    )
    .await;
    assert_eq!(status, 404);
    let reads = setup.ingest.registry_reads() - before;
    assert!(
        reads <= 5_001,
        "{reads} registry reads for 5,001 made-up ids"
    );
    assert_eq!(
        record_count(&setup.kafka, &setup.topic),
        0,
        "nothing reached Kafka"
    );
    let database = reactions::mongo::connect(&servers().mongo("unused"), "check")
        .await
        .unwrap()
        .client()
        .database(&setup.database);
    let windows = database
        .collection::<mongodb::bson::Document>("windows")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(windows, 0, "no window document was created");
    let streams = database
        .collection::<mongodb::bson::Document>("streams")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(streams, 4, "only the four registered streams exist");
}

#[tokio::test]
async fn admin_writes_to_a_mongodb_that_stops_answering_get_503_within_the_write_limit() {
    let (proxy, uri) = FaultProxy::for_mongodb(&servers().mongodb_uri)
        .await
        .unwrap();
    let setup = setup_on(&servers().kafka_brokers, &uri, &[]).await;
    let (status, _) = call(&setup, admin_request("GET", "/admin/streams", None)).await;
    assert_eq!(status, 200, "connected and answering");

    proxy.stall(true);
    let writes = [
        admin_request(
            "PUT",
            "/admin/streams/stalled",
            Some(json!({"title": "Stalled"})),
        ),
        admin_request("POST", "/admin/streams/stalled/start", None),
    ];
    for request in writes {
        let path = request.uri().path().to_owned();
        let started = Instant::now();
        let (status, body) = call(&setup, request).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_bounded(
            started.elapsed(),
            REQUEST_WRITE_LIMIT,
            "an admin write to a MongoDB that stopped answering",
        );
    }
}

#[tokio::test]
async fn moderation_pauses_reactions_and_sends_the_streams_fair_use_limit_with_its_taps() {
    use reactions::message::VersionedMessage;
    let setup = setup_with(&[]).await;
    let other = setup
        .another_container(&[("STREAM_CACHE_TTL_MS", "1000")])
        .await;
    let path = "/admin/streams/moderated";
    let (status, created) = call(
        &setup,
        admin_request("PUT", path, Some(json!({"title": "Moderated"}))),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (&created["reactions_paused"], &created["fair_use_limit"]),
        (&json!(false), &Value::Null)
    );
    call(
        &setup,
        admin_request("POST", &format!("{path}/start"), None),
    )
    .await;
    // The other container reads the stream (and caches it) while it takes reactions.
    let taken = other.handle(reaction("moderated", "fire")).await;
    assert_eq!(taken.status().as_u16(), 202);

    let (status, paused) = call(
        &setup,
        admin_request(
            "PUT",
            path,
            Some(json!({"reactions_paused": true, "fair_use_limit": 5})),
        ),
    )
    .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(
        (&paused["reactions_paused"], &paused["fair_use_limit"]),
        (&json!(true), &json!(5))
    );
    // The container that made the change refuses at once, with a code a page can show.
    let (status, refused) = call(&setup, reaction("moderated", "fire")).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"], "reactions_paused");
    assert_eq!(refused["stream_id"], "moderated");
    // The other within one cache period: once its view of the stream shows the pause, its
    // reactions are refused too.
    eventually("the other container to see the pause", || async {
        let shown = body_json(
            &other
                .handle(request("GET", "/streams/moderated", None, Body::Empty))
                .await,
        );
        match shown["reactions_paused"] == json!(true) {
            true => Ok(()),
            false => Err(format!("still {shown}")),
        }
    })
    .await;
    let refused = other.handle(reaction("moderated", "fire")).await;
    assert_eq!(refused.status().as_u16(), 409);

    // Taken again once the pause is lifted, each reaction carrying the stream's limit to
    // aggregate; back to the deployment's limit, none.
    let lifted = json!({"reactions_paused": false});
    assert_eq!(
        call(&setup, admin_request("PUT", path, Some(lifted)))
            .await
            .0,
        200
    );
    assert_eq!(call(&setup, reaction("moderated", "fire")).await.0, 202);
    let cleared = json!({"fair_use_limit": null});
    let (status, back) = call(&setup, admin_request("PUT", path, Some(cleared))).await;
    assert_eq!((status, &back["fair_use_limit"]), (200, &Value::Null));
    assert_eq!(call(&setup, reaction("moderated", "clap")).await.0, 202);
    let records = emostream_tests::topic_reader::read_records(
        &setup.kafka,
        &setup.topic,
        3,
        emostream_tests::patience::PATIENCE,
    )
    .await;
    let mut limits: Vec<(String, u32, Option<u32>)> = records
        .iter()
        .map(|message| {
            use rdkafka::message::Message;
            let record = reactions::message::ReactionRecord::decode(message.payload().unwrap())
                .expect("a reaction record");
            (
                record.emoji.as_str().to_owned(),
                record.v,
                record.fair_use_limit,
            )
        })
        .collect();
    limits.sort();
    assert_eq!(
        limits,
        [
            ("clap".to_owned(), 1, None),
            ("fire".to_owned(), 1, None),
            ("fire".to_owned(), 3, Some(5)),
        ]
    );

    // Mistakes name their field; nothing changes.
    let (status, wrong) = call(
        &setup,
        admin_request("PUT", path, Some(json!({"fair_use_limit": 0}))),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(wrong["errors"][0]["field"], "fair_use_limit");
    assert_eq!(wrong["errors"][0]["rule"], "out_of_range");
}
