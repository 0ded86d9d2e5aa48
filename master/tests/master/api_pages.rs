//! The name-keyed list routes page and filter like the task list: `limit` 1..=10000 (422
//! outside), `after` a name, unknown parameters 400; agents by presence and availability.

use serde_json::{Value, json};

use super::runtime::{FakeAgent, MasterProc};

fn names(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|t| t[key].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_agents_come_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    for name in ["c-ci", "a-ci", "b-ci"] {
        let (status, v) = master.post("/api/tokens", json!({ "name": name, "role": "viewer" }));
        assert_eq!(status, 201, "{v}");
    }
    let (status, all) = master.get("/api/tokens");
    assert_eq!(status, 200, "{all}");
    let all = names(&all, "name");
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "tokens in name order");
    assert_eq!(all.len(), 4, "{all:?}"); // the first admin token too
    let (_, first) = master.get("/api/tokens?limit=2");
    assert_eq!(names(&first, "name"), all[..2]);
    let (_, rest) = master.get(&format!("/api/tokens?after={}", all[1]));
    assert_eq!(names(&rest, "name"), all[2..]);

    let mut agents = vec![];
    for (id, inc) in [("pi-c", 1), ("pi-a", 2), ("pi-b", 3)] {
        agents.push(FakeAgent::online(&master, id, inc).await);
    }
    let (status, agents) = master.get("/api/agents?limit=2&after=pi-a");
    assert_eq!(status, 200, "{agents}");
    assert_eq!(names(&agents, "id"), ["pi-b", "pi-c"]);
    let (_, online) = master.get("/api/agents?presence=online&available=true&limit=3");
    assert_eq!(names(&online, "id"), ["pi-a", "pi-b", "pi-c"]);
    let (_, lost) = master.get("/api/agents?presence=lost");
    assert_eq!(names(&lost, "id"), Vec::<String>::new());
    let (_, busy) = master.get("/api/agents?available=false");
    assert_eq!(names(&busy, "id"), Vec::<String>::new());

    for (path, status, code) in [
        ("/api/tokens?limit=0", 422, "invalid"),
        ("/api/tokens?limit=10001", 422, "invalid"),
        ("/api/tokens?limit=x", 400, "bad_request"),
        ("/api/tokens?secret=1", 400, "bad_request"),
        ("/api/agents?limit=0", 422, "invalid"),
        ("/api/agents?presence=gone", 422, "invalid"),
        ("/api/agents?available=maybe", 400, "bad_request"),
        ("/api/agents?state=x", 400, "bad_request"),
    ] {
        let (got, v) = master.get(path);
        assert_eq!(
            (got, v["code"].as_str()),
            (status, Some(code)),
            "{path}: {v}"
        );
    }
}
