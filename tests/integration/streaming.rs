//! Bodies stream through the gateway in both directions: 100 MB up and down
//! through the real binary while its peak memory stays small.

use crate::support::gateway::{BinaryGateway, GatewayFiles, GatewayOptions};
use crate::support::{Behavior, Upstream};

const HUNDRED_MB: u64 = 100 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_each_way_with_small_peak_memory() {
    let upstream = Upstream::start(Behavior::Download(HUNDRED_MB)).await;
    let files = GatewayFiles::create(&GatewayOptions::routes(format!(
        "[[route]]\nname = \"bulk\"\npath_prefix = \"/bulk/\"\nupstream = \"{}\"\nauth = \"public\"\n",
        upstream.url()
    )));
    let gateway = BinaryGateway::start(&files, "info");
    let client = gateway.client(&files);
    // Startup work (the argon2 dummy hash) is not what this test measures.
    let before_kib = gateway.status_kib("VmRSS:");
    gateway.reset_peak_memory();

    let upload = client.post("/bulk/up").zeros(HUNDRED_MB).send().await;
    assert_eq!(upload.status, 200);
    assert_eq!(upstream.only().body_len, HUNDRED_MB);

    let (response, _) = client.get("/bulk/down").send_streaming().await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, HUNDRED_MB);

    let peak_kib = gateway.status_kib("VmHWM:");
    let growth_kib = peak_kib.saturating_sub(before_kib);
    assert!(
        growth_kib < 24 * 1024,
        "gateway RSS grew by {growth_kib} KiB (from {before_kib} to a peak of {peak_kib}) \
         while streaming 200 MB: bodies were buffered"
    );
}
