//! Heap sampling switched at run time on the example (jemalloc installed with
//! `perfkit::jemalloc_profiling!()`): `/debug/perfkit/heap-sampling` reads it, `POST`
//! pauses, resumes and changes the rate, the heap endpoints follow, and the inventory shows
//! the current state.

mod common;

use common::ingest::start_service;

#[test]
#[ignore = "needs a built ingest binary; scripts/test.sh builds it and runs ignored tests"]
fn heap_sampling_is_paused_resumed_and_resampled_at_run_time() {
    let dir = common::results_dir("heap_sampling");
    let svc = start_service(&dir.join("ingest.log"), &[]);
    let get = |path: &str| common::get(svc.debug, path);
    let post = |path: &str| common::request(svc.debug, "POST", path, &[]);

    let now = get("/debug/perfkit/heap-sampling");
    assert_eq!(now.status, 200, "{}", now.text());
    let v = now.json();
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["lg_sample"], 19, "jemalloc_profiling!()'s default: {v}");
    assert_eq!(v["sample_bytes"], 524_288);
    assert_eq!(
        get("/debug/perfkit/inventory").json()["server"]["heap_sampling"],
        v
    );

    // Paused: the heap profile says so, and the inventory too.
    let r = post("/debug/perfkit/heap-sampling?active=false");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["active"], false);
    let heap = get("/debug/pprof/heap");
    assert_eq!(heap.status, 501, "{}", heap.text());
    assert!(heap.text().contains("not active"), "{}", heap.text());
    assert_eq!(
        get("/debug/perfkit/inventory").json()["server"]["heap_sampling"]["active"],
        false
    );

    // Resumed at one sample per MiB.
    let r = post("/debug/perfkit/heap-sampling?active=true&lg_sample=20");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["active"].clone(), v["lg_sample"].clone()),
        (true.into(), 20.into()),
        "{v}"
    );
    let heap = get("/debug/pprof/heap?debug=1");
    assert_eq!(heap.status, 200, "{}", heap.text());
    assert!(
        heap.text().contains("one sample per 1048576 bytes"),
        "{}",
        heap.text()
    );

    // Bad input: one line and a 4xx.
    for (method, path, status, says) in [
        (
            "POST",
            "/debug/perfkit/heap-sampling",
            400,
            "nothing to change",
        ),
        (
            "POST",
            "/debug/perfkit/heap-sampling?active=maybe",
            400,
            "expected true or false",
        ),
        (
            "POST",
            "/debug/perfkit/heap-sampling?lg_sample=31",
            400,
            "0 to 30",
        ),
        (
            "POST",
            "/debug/perfkit/heap-sampling?lg_sample=-1",
            400,
            "whole number",
        ),
        (
            "GET",
            "/debug/perfkit/heap-sampling?active=false",
            405,
            "needs POST",
        ),
        ("PUT", "/debug/perfkit/heap-sampling", 405, "GET, POST"),
        ("POST", "/debug/perfkit/inventory", 405, "use GET"),
    ] {
        let r = common::request(svc.debug, method, path, &[]);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        let t = r.text();
        assert!(
            t.contains(says) && t.trim().lines().count() == 1,
            "{method} {path}: {t}"
        );
    }
    // Nothing changed by the refusals.
    assert_eq!(get("/debug/perfkit/heap-sampling").json()["lg_sample"], 20);
    svc.stop();
}
