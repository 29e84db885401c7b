//! Viewer identity end to end through the local stack with its demo issuer: the HTTP API's JWT
//! authorizer refuses missing, forged, expired and other-audience tokens with API Gateway's
//! 401 before ingest runs; a valid token's subject is the viewer whose taps are counted, and a
//! body naming another viewer is refused; the WebSocket connect needs the token too. Tokens
//! naming made-up key ids cannot make every check fetch the issuer's keys.

use emostream_local::api_gateway::admin_client::AdminClient;
use emostream_local::demo_issuer::{DemoIssuer, rsa_key_pair, sign};
use emostream_local::stack::DemoIssuerOptions;
use emostream_tests::http_client::JsonClient;
use emostream_tests::local_stack::{TestStack, WsClient};
use emostream_tests::patience::eventually;
use mongodb::bson::{Document, doc};
use reactions::viewer_identity::{IdentitySettings, TokenRefusal, TokenVerifier};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn only_a_valid_token_posts_and_its_subject_is_the_viewer() {
    let test = TestStack::start("identity", |options| {
        options.demo_issuer = Some(DemoIssuerOptions::default());
    })
    .await;
    let api = test.stack.http_url.clone();
    let issuer = test
        .stack
        .demo_issuer
        .clone()
        .expect("the demo issuer runs");
    AdminClient::local(&api)
        .register_live("final", "Cup final", None)
        .await
        .unwrap();
    let client = JsonClient::default();
    let url = format!("{api}/reactions");
    let ingest_invocations = || {
        test.stack.functions["IngestFunction"]
            .stats
            .invocations
            .load(Ordering::Relaxed)
    };
    let before = ingest_invocations();
    let tap = json!({"stream_id": "final", "emoji": "fire"});

    let (status, answer) = client.post(&url, &tap).await;
    assert_eq!((status, answer), (401, json!({"message": "Unauthorized"})));
    let now_s = reactions::clock::now_ms() / 1000;
    let mut expired = issuer.claims_for("viewer:ann");
    expired["iat"] = json!(now_s - 120);
    expired["nbf"] = json!(now_s - 120);
    expired["exp"] = json!(now_s - 60);
    let mut other_audience = issuer.claims_for("viewer:ann");
    other_audience["aud"] = json!("another-app");
    let mut other_issuer = issuer.claims_for("viewer:ann");
    other_issuer["iss"] = json!("https://id.example.com");
    let impostor = DemoIssuer::new(issuer.issuer(), issuer.audience(), Duration::from_secs(60))
        .unwrap()
        .token_for("viewer:ann");
    let real_kid = jsonwebtoken::decode_header(issuer.token_for("viewer:ann"))
        .unwrap()
        .kid
        .unwrap();
    let (forger_key, _) = rsa_key_pair(&real_kid).unwrap();
    let forged = sign(&issuer.claims_for("viewer:ann"), &forger_key, &real_kid);
    for (what, token) in [
        ("expired", issuer.mint(&expired)),
        ("other audience", issuer.mint(&other_audience)),
        ("other issuer", issuer.mint(&other_issuer)),
        ("unknown key", impostor),
        ("forged signature", forged),
        ("not a JWT", "not-a-token".to_owned()),
    ] {
        let (status, answer) = client
            .post_authorized(&url, &format!("Bearer {token}"), &tap)
            .await;
        assert_eq!(
            (status, answer),
            (401, json!({"message": "Unauthorized"})),
            "{what}"
        );
    }
    assert_eq!(
        ingest_invocations(),
        before,
        "refused requests never reach ingest"
    );

    let ann = format!("Bearer {}", issuer.token_for("viewer:ann"));
    let as_bob = json!({"stream_id": "final", "emoji": "fire", "user_id": "viewer:bob"});
    let (status, answer) = client.post_authorized(&url, &ann, &as_bob).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("user_id_mismatch")),
        "{answer}"
    );
    assert_eq!(answer["field"], "user_id");
    let (status, answer) = client.post_authorized(&url, &ann, &tap).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    let batch = json!({"reactions": [
        {"stream_id": "final", "emoji": "clap", "user_id": "viewer:ann"},
        {"stream_id": "final", "emoji": "clap"},
    ]});
    let (status, answer) = client.post_authorized(&url, &ann, &batch).await;
    assert_eq!(status, 202, "{answer}");

    // An identity provider's subject that is not an id (`auth0|…`) taps under its mapped id,
    // whether the body names the subject, the mapped id or nobody.
    let provider = "auth0|64f1c2";
    let carol_id = reactions::UserId::from_subject(provider);
    let carol = format!("Bearer {}", issuer.token_for(provider));
    let carol_batch = json!({"reactions": [
        {"stream_id": "final", "emoji": "fire", "user_id": provider},
        {"stream_id": "final", "emoji": "fire", "user_id": carol_id.as_str()},
        {"stream_id": "final", "emoji": "fire"},
    ]});
    let (status, answer) = client.post_authorized(&url, &carol, &carol_batch).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (202, Some(3)),
        "{answer}"
    );

    // A key is the viewer's own: ann and carol using the same key for different taps are both
    // counted (one viewer's key never refuses or stands for another's taps).
    let key = [("idempotency-key", "shared-session:1")];
    for (token, emoji) in [(&ann, "party"), (&carol, "joy")] {
        let headers = [key[0], ("authorization", token.as_str())];
        let body = json!({"stream_id": "final", "emoji": emoji});
        let (status, answer) = client.post_with(&url, &headers, &body).await;
        assert_eq!(status, 202, "{answer}");
    }

    // The taps are counted as ann's: her fair-use counts hold all four.
    let mongo = reactions::mongo::connect(&test.mongo(), "identity-test")
        .await
        .unwrap();
    let tallies = mongo.collection::<Document>("viewer_taps");
    eventually("ann's and carol's taps are counted as theirs", || {
        let tallies = tallies.clone();
        let carol_id = carol_id.clone();
        async move {
            let mut cursor = tallies.find(doc! {}).await.map_err(|e| e.to_string())?;
            let mut seen = Vec::new();
            while cursor.advance().await.map_err(|e| e.to_string())? {
                seen.push(cursor.deserialize_current().map_err(|e| e.to_string())?);
            }
            let counted_for = |viewer: &str| -> i64 {
                seen.iter()
                    .filter(|d| d.get_str("_id").is_ok_and(|id| id.ends_with(viewer)))
                    .filter_map(|d| d.get_document("windows").ok())
                    .flat_map(|windows| {
                        windows
                            .values()
                            .filter_map(|n| match n {
                                mongodb::bson::Bson::Int64(n) => Some(*n),
                                mongodb::bson::Bson::Int32(n) => Some(i64::from(*n)),
                                _ => None,
                            })
                            .collect::<Vec<_>>()
                    })
                    .sum()
            };
            let (ann, carol) = (counted_for("/viewer:ann"), counted_for(carol_id.as_str()));
            if ann == 4 && carol == 4 && seen.len() <= 2 {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        }
    })
    .await;

    // The WebSocket connect needs the token in its query.
    let socket = test.websocket_url("final");
    assert_eq!(WsClient::connect(&socket).await.err(), Some(401));
    let token = issuer.token_for("viewer:ann");
    assert!(
        WsClient::connect(&format!("{socket}&token={token}"))
            .await
            .is_ok()
    );
    test.stack.stop().await;
}

#[tokio::test]
async fn made_up_key_ids_cannot_make_every_check_a_fetch() {
    let issuer = DemoIssuer::spawn_local("emostream-test", Duration::from_secs(600))
        .await
        .unwrap();
    let verifier = TokenVerifier::new(IdentitySettings {
        issuer: issuer.issuer().to_owned(),
        audience: "emostream-test".to_owned(),
    });
    let now_s = reactions::clock::now_ms() / 1000;
    let good = issuer.token_for("viewer:ann");
    let viewer = verifier.verify(Some(&good), now_s).await.unwrap();
    assert_eq!(viewer.subject, "viewer:ann");
    assert_eq!(verifier.keys().fetches().await, 1);
    let (forger_key, _) = rsa_key_pair("x").unwrap();
    for attempt in 0..200 {
        let token = sign(
            &issuer.claims_for("viewer:ann"),
            &forger_key,
            &format!("made-up-{attempt}"),
        );
        assert!(matches!(
            verifier.verify(Some(&token), now_s).await,
            Err(TokenRefusal::UnknownKey(_))
        ));
    }
    // The keys were fetched under a minute ago: unknown ids are refused from the cache.
    assert_eq!(verifier.keys().fetches().await, 1);
    assert!(verifier.verify(Some(&good), now_s).await.is_ok());
}
