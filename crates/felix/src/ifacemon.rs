//! The interface monitor (upstream `felix/ifacemonitor`): netlink link events plus a full
//! rescan every `InterfaceRefreshInterval`, reported as per-interface states and one
//! [`IfaceEvent::InSync`] after the initial dump.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use calico_linux::{LinkEvent, LinkInfo, Netlink, NetlinkError};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

/// What the monitor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfaceEvent {
    /// A link exists with this state (new, or its name/index/up-ness changed).
    State(LinkInfo),
    /// The link is gone.
    Removed(LinkInfo),
    /// The initial dump is complete.
    InSync,
}

/// Runs the monitor until shutdown or until the consumer goes away. Monitor failures are
/// retried; the rescan keeps the state right meanwhile.
pub async fn run(
    netlink: Arc<dyn Netlink>,
    refresh: Duration,
    tx: mpsc::Sender<IfaceEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut known: BTreeMap<u32, LinkInfo> = BTreeMap::new();
    let mut in_sync = false;
    let refresh = if refresh.is_zero() {
        Duration::from_secs(90)
    } else {
        refresh
    };
    loop {
        let mut stream = match netlink.monitor_links().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "link monitor failed to start; rescanning instead");
                if !rescan(&*netlink, &mut known, &tx).await.unwrap_or(true) {
                    return;
                }
                if !in_sync {
                    in_sync = true;
                    if tx.send(IfaceEvent::InSync).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let mut ticker = tokio::time::interval(refresh);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {
                    match rescan(&*netlink, &mut known, &tx).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => warn!(error = %e, "interface rescan failed"),
                    }
                }
                item = stream.next() => {
                    let ev = match item {
                        None => {
                            warn!("link monitor ended; restarting it");
                            break;
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, "link monitor error; restarting it");
                            break;
                        }
                        Some(Ok(ev)) => ev,
                    };
                    let out = match ev {
                        LinkEvent::Added(l) | LinkEvent::Up(l) | LinkEvent::Down(l) | LinkEvent::Changed(l) => {
                            known.insert(l.index, l.clone());
                            Some(IfaceEvent::State(l))
                        }
                        LinkEvent::Removed(l) => {
                            known.remove(&l.index);
                            Some(IfaceEvent::Removed(l))
                        }
                        LinkEvent::InSync => {
                            if in_sync {
                                // A restarted monitor re-dumps; a rescan drops what vanished.
                                match rescan(&*netlink, &mut known, &tx).await {
                                    Ok(false) => return,
                                    Ok(true) => {}
                                    Err(e) => warn!(error = %e, "interface rescan failed"),
                                }
                                None
                            } else {
                                in_sync = true;
                                Some(IfaceEvent::InSync)
                            }
                        }
                    };
                    if let Some(out) = out
                        && tx.send(out).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn same(a: &LinkInfo, b: &LinkInfo) -> bool {
    a.name == b.name && a.is_up() == b.is_up() && a.mac == b.mac
}

/// Full rescan: reports every difference to `known`. `Ok(false)` when the consumer is gone.
async fn rescan(
    netlink: &dyn Netlink,
    known: &mut BTreeMap<u32, LinkInfo>,
    tx: &mpsc::Sender<IfaceEvent>,
) -> Result<bool, NetlinkError> {
    let links = netlink.list_links().await?;
    let mut now: BTreeMap<u32, LinkInfo> = links.into_iter().map(|l| (l.index, l)).collect();
    for (index, old) in known.iter() {
        if !now.contains_key(index) {
            debug!(iface = %old.name, "rescan: interface gone");
            if tx.send(IfaceEvent::Removed(old.clone())).await.is_err() {
                return Ok(false);
            }
        }
    }
    for (index, l) in &now {
        if known.get(index).is_none_or(|old| !same(old, l))
            && tx.send(IfaceEvent::State(l.clone())).await.is_err()
        {
            return Ok(false);
        }
    }
    std::mem::swap(known, &mut now);
    Ok(true)
}
