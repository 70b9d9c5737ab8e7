//! The controller's terminator validation asks the SDK about its Bind (ConnInspect).

use std::path::Path;
use std::time::Duration;

use ziti_sdk::ZitiContext;

use crate::support::{TestIdentity, exclusive_service, host_role, network, within, ziti_cli};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminator_validation_finds_the_bind_valid() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let context = ZitiContext::from_file(&host.file).await.unwrap();
    let listener = within("bind", Duration::from_secs(30), context.listen(&network.service_name)).await.unwrap();

    let filter = format!("service.name=\"{}\"", network.service_name);
    let args = ["fabric", "validate", "terminators", "--filter", &filter, "--include-valid"];
    let report = ziti_cli(&network, &args, Path::new(".")).await;
    assert!(report.contains("state: Valid") && report.contains("detail: listening"), "{report}");
    drop(listener);
    host.delete().await;
}
