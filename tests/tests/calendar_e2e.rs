//! End to end: the wedding calendar over the API, its token, its database, and protection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wedsync_tests::{AgentProcess, unique_dir};

const TOKEN: &str = "test-token-0123456789";

const POOL: &str = r#"
[[pools]]
name = "ceremony"
region = "eu-west"
min = 1
# A fresh pool at its minimum (no size source in this test).
assume_size = 1
max = 40
provisioning_delay = "0s"
protected_floor = 12
demand_metric = "requests"
"#;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn wedding_json(id: &str, start_ms: i64) -> String {
    format!(
        r#"{{"id":"{id}","region":"eu-west","time_zone":"Europe/Dublin","start_unix_ms":{start_ms},"end_unix_ms":{},"guests":180}}"#,
        start_ms + 8 * 3_600_000
    )
}

#[test]
fn mutating_calls_need_the_token() {
    let without = AgentProcess::start_with_config(POOL, &[]);
    let (status, body) = without.call("POST", "/v1/weddings", Some(TOKEN), Some(&wedding_json("w-1", now_ms())));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("set api.token"));

    let agent = AgentProcess::start_with_config(POOL, &[("WEDSYNC__API__TOKEN", TOKEN)]);
    let body = wedding_json("w-1", now_ms());
    assert_eq!(agent.call("POST", "/v1/weddings", None, Some(&body)).0, 401);
    assert_eq!(agent.call("POST", "/v1/weddings", Some("wrong-token-0123456789"), Some(&body)).0, 401);
    assert_eq!(agent.call("DELETE", "/v1/weddings/w-1", None, None).0, 401);
    let (status, reply) = agent.call("POST", "/v1/weddings", Some(TOKEN), Some("{\"id\":"));
    assert_eq!(status, 400);
    assert!(
        serde_json::from_str::<serde_json::Value>(&reply).unwrap()["error"]
            .as_str()
            .unwrap()
            .starts_with("bad wedding")
    );
    let bad_times = r#"{"id":"w-2","region":"eu-west","start_unix_ms":10,"end_unix_ms":5}"#;
    let (status, reply) = agent.call("POST", "/v1/weddings", Some(TOKEN), Some(bad_times));
    assert_eq!(status, 400);
    assert!(reply.contains("is not after start"), "{reply}");
}

#[test]
fn a_wedding_survives_restart_and_protects_its_region() {
    let state = unique_dir("calendar-state");
    let state = state.to_str().unwrap();
    let env = [("WEDSYNC__API__TOKEN", TOKEN), ("WEDSYNC__STORAGE__DIR", state)];
    {
        let mut agent = AgentProcess::start_with_config(POOL, &env);
        let (status, body) =
            agent.call("POST", "/v1/weddings", Some(TOKEN), Some(&wedding_json("w-1", now_ms() + 60_000)));
        assert_eq!(status, 201, "{body}");
        let (exit, _) = agent.signal_and_wait("TERM", Duration::from_secs(5)).unwrap();
        assert!(exit.success());
    }
    let agent = AgentProcess::start_with_config(POOL, &env);
    let listed = agent.get_json("/v1/weddings");
    let weddings = listed["weddings"].as_array().unwrap();
    assert_eq!(weddings.len(), 1, "{listed}");
    assert_eq!(weddings[0]["wedding"]["id"], "w-1");
    assert_eq!(weddings[0]["active"], true, "inside the 2 h lead time");

    // The pool is held at its protected floor even with tiny demand.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        agent.send(b"requests:1|c|#class:wedding-critical");
        let pools = agent.get_json("/v1/pools");
        let status = &pools["pools"][0]["status"];
        if status["target"].as_u64() == Some(12) && status["protected"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "pool not protected: {pools}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let decisions = agent.get_json("/v1/decisions?pool=ceremony");
    let protected = decisions["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["reasons"].as_array().unwrap().iter().any(|r| r["rule"] == "protected" && r["floor"] == 12));
    assert!(protected, "{decisions}");

    assert_eq!(agent.call("DELETE", "/v1/weddings/w-1", Some(TOKEN), None).0, 204);
    assert_eq!(agent.call("DELETE", "/v1/weddings/w-1", Some(TOKEN), None).0, 404);
    assert!(agent.get_json("/v1/weddings")["weddings"].as_array().unwrap().is_empty());
}

#[test]
fn the_calendar_file_is_loaded_at_start() {
    let dir = unique_dir("calendar-file");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("weddings.toml");
    std::fs::write(
        &file,
        "[[weddings]]\nid = \"w-file\"\nregion = \"eu-west\"\nstart = \"2031-06-14T12:00:00Z\"\nend = \"2031-06-14T22:00:00Z\"\nguests = 90\n",
    )
    .unwrap();
    let agent = AgentProcess::start_with_config(POOL, &[("WEDSYNC__CALENDAR__FILE", file.to_str().unwrap())]);
    let listed = agent.get_json("/v1/weddings");
    assert_eq!(listed["weddings"][0]["wedding"]["id"], "w-file", "{listed}");
    assert_eq!(listed["weddings"][0]["active"], false);
}
