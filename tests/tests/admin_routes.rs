//! The local HTTP API's IAM authorizer on the admin routes, as API Gateway answers: unsigned
//! requests and bad signatures get 403 before the function runs; a request signed with the
//! local credentials reaches ingest, which sees the caller and registers the stream.

use aws_credential_types::Credentials;
use emostream_local::api_gateway::admin_client::AdminClient;
use emostream_tests::http_client::JsonClient;
use emostream_tests::local_stack::TestStack;
use serde_json::json;

#[tokio::test]
async fn admin_routes_take_only_requests_signed_with_the_local_credentials() {
    let test = TestStack::start("admin", |_| {}).await;
    let api = test.stack.http_url.clone();
    let body = json!({"title": "Cup final"});

    let (status, answer) = JsonClient::default()
        .call("POST", &format!("{api}/admin/streams/final/start"))
        .await;
    assert_eq!((status, answer), (403, json!({"message": "Forbidden"})));

    let forged = Credentials::new("local", "not-the-secret", None, None, "test");
    let (status, answer) = AdminClient::new(&api, forged, "us-east-1")
        .send("PUT", "/admin/streams/final", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 403);
    assert!(
        answer["message"].as_str().unwrap().contains("signature"),
        "{answer}"
    );
    let stranger = Credentials::new("AKIDSTRANGER", "x", None, None, "test");
    let (status, _) = AdminClient::new(&api, stranger, "us-east-1")
        .send("PUT", "/admin/streams/final", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (status, _) = JsonClient::default()
        .get(&format!("{api}/streams/final"))
        .await;
    assert_eq!(status, 404, "no refused request reached ingest");

    let admin = AdminClient::local(&api);
    let (status, created) = admin
        .send("PUT", "/admin/streams/final", Some(&body))
        .await
        .unwrap();
    assert_eq!(
        (status, created["status"].as_str()),
        (201, Some("scheduled"))
    );
    let live = admin
        .register_live("final", "Cup final", None)
        .await
        .unwrap();
    assert_eq!(live["status"], "live");
    let (status, listed) = admin
        .send("GET", "/admin/streams?status=live", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(listed["streams"][0]["id"], "final");
    let (status, shown) = JsonClient::default()
        .get(&format!("{api}/streams/final"))
        .await;
    assert_eq!((status, shown["status"].as_str()), (200, Some("live")));
    test.stack.stop().await;
}
