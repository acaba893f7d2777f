//! `RtNetlink::delete_link_by_name_blocking` and `NetNs::enter_for_good`, the two pieces of the
//! CNI plugin's link-deleting helper process, against the real kernel in a lab namespace.

#![allow(clippy::unwrap_used)]

use calico_linux::RtNetlink;
use calico_linux::testlab::{LabNs, lab_available};

#[test]
fn blocking_delete_by_name_in_an_entered_namespace() {
    if !lab_available("blocking_delete_by_name_in_an_entered_namespace") {
        return;
    }
    let ns = LabNs::new("bdel").unwrap();
    ns.ip(&["link", "add", "va0", "type", "veth", "peer", "name", "vb0"])
        .unwrap();
    let netns = ns.netns().clone();
    // A thread of its own enters the namespace for good and ends with it.
    let results = std::thread::spawn(move || {
        netns.enter_for_good().unwrap();
        let first = RtNetlink::delete_link_by_name_blocking("va0");
        let again = RtNetlink::delete_link_by_name_blocking("va0");
        let bad = RtNetlink::delete_link_by_name_blocking("bad/name");
        (first, again, bad)
    })
    .join()
    .unwrap();
    results.0.unwrap();
    let again = results.1.unwrap_err();
    assert!(again.is_not_found(), "{again}");
    assert!(again.to_string().contains("link va0"), "{again}");
    assert!(results.2.is_err());
    // Both ends went; the test thread's own namespace was never touched.
    let links = ns.ip(&["-o", "link", "show"]).unwrap();
    assert!(!links.contains("va0") && !links.contains("vb0"), "{links}");
}
