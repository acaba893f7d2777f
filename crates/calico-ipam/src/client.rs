//! The I/O shell: [`IpamClient`] reads IPAM objects from a [`KvStore`], decides with the pure
//! core, and writes back with compare-and-swap, retrying on conflicts (at most
//! [`DATASTORE_RETRIES`] times, as upstream).
//!
//! ## Where this differs from upstream, and why
//!
//! Upstream writes one object at a time, so it needs a three-step affinity claim (pending
//! affinity, create block, confirm affinity) and writes the handle and the block separately
//! (incrementing the handle first and decrementing it again if the block write fails). A crash
//! between steps leaves pending affinities, affinities without blocks, or handle counts that do
//! not match the blocks (upstream issues #4471, #6001). The [`KvStore`] offers an atomic
//! multi-key `txn`, so here:
//!
//! * **claiming a block** is one transaction: create (or CAS-update) the affinity as `confirmed`
//!   *and* create the block. The create of the block key is still the arbiter between hosts
//!   racing for the same CIDR; the loser's transaction fails as a whole, leaving nothing behind.
//! * **assigning / releasing** writes the block and the handle object(s) in one transaction, each
//!   conditional on the revision it was read at.
//! * **releasing an affinity** deletes (or un-affines) the block and deletes the affinity in one
//!   transaction.
//!
//! Data written by upstream is still handled as upstream does: pending affinities are confirmed
//! when their block carries our affinity, stale affinities (block owned by someone else) are
//! deleted, and affinities without a block get their block recreated.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use calico_datastore::{KvError, KvStore, Revision, TxnOp};
use ipnet::IpNet;
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use crate::addr::IpVersion;
use crate::affinity::BlockAffinity;
use crate::block::{Affinity, AllocationBlock, BlockError, ReleaseOptions};
use crate::check::{self, AffinityRecord, CheckReport, InvalidBlock, IpamSnapshot, LiveWorkloads};
use crate::config::{ConfigError, IpamConfig};
use crate::handle::IpamHandle;
use crate::keys;
use crate::pool::{
    self, AllowedUse, AssignmentMode, BlockChoice, BlockIndex, ExistingBlock, PoolConfig,
    PoolFilter, PoolSelectionError,
};
use crate::reservation::Reservations;

/// How many times a conflicting write is retried before giving up.
pub const DATASTORE_RETRIES: usize = 100;

/// The affinity name upstream uses for LoadBalancer blocks (`virtual:load-balancer`).
pub const LOAD_BALANCER_AFFINITY: &str = "load-balancer";

/// Errors of the IPAM client. Messages follow upstream's wording where users grep for it.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("datastore: {0}")]
    Kv(#[from] KvError),
    #[error("key {key}: cannot decode: {reason}")]
    Decode { key: String, reason: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pool(#[from] PoolSelectionError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("cannot allocate new block due to per host block limit ({limit} blocks)")]
    BlockLimit { limit: u32 },
    #[error("failed to find or claim a block: autoAllocateBlocks is disabled")]
    AutoAllocateDisabled,
    #[error("max retries hit - excessive concurrent ipam requests ({operation})")]
    MaxRetries { operation: String },
    #[error("ip {0}: the provided ip address is not in a configured pool")]
    NotInPool(IpAddr),
    #[error("ip {ip}: pool {pool} does not allow use {use_:?}")]
    UseNotAllowed {
        ip: IpAddr,
        pool: String,
        use_: AllowedUse,
    },
    #[error("handle {0}: not found")]
    HandleNotFound(String),
    #[error("block {0}: not found")]
    BlockNotFound(IpNet),
    #[error("affinity {owner} for block {block}: not found")]
    AffinityNotFound { owner: String, block: IpNet },
    #[error("block {block}: claimed by {owner}, not {wanted}")]
    ClaimConflict {
        block: IpNet,
        owner: String,
        wanted: String,
    },
    #[error("block {0}: not empty")]
    BlockNotEmpty(IpNet),
    #[error("block {0}: updated since it was read")]
    BlockChanged(IpNet),
    #[error("handle id must not be empty or contain '/'")]
    InvalidHandle,
    #[error("hostname must not be empty or contain '/'")]
    InvalidHostname,
    #[error("assign ip: no address given")]
    MissingAddress,
    #[error("block {block}: release failed: {reason}")]
    ReleaseFailed { block: IpNet, reason: String },
}

impl IpamError {
    /// A lost compare-and-swap race: re-read and try again.
    fn is_contention(&self) -> bool {
        matches!(
            self,
            IpamError::Kv(
                KvError::Conflict { .. } | KvError::AlreadyExists { .. } | KvError::NotFound { .. }
            )
        )
    }
}

/// Arguments of [`IpamClient::auto_assign`].
#[derive(Clone)]
pub struct AutoAssignArgs {
    pub num4: usize,
    pub num6: usize,
    /// Handle the addresses are recorded under (e.g. `k8s-pod-network.<containerID>`).
    pub handle_id: Option<String>,
    /// Owner attributes (`node`, `pod`, `namespace`, `timestamp`, …).
    pub attrs: BTreeMap<String, String>,
    pub hostname: String,
    /// Pools requested by CIDR; when non-empty they are used regardless of selectors.
    pub ipv4_pools: Vec<IpNet>,
    pub ipv6_pools: Vec<IpNet>,
    /// Per-request block cap (`0` = use the configured one).
    pub max_blocks_per_host: u32,
    pub intended_use: AllowedUse,
    /// The verdict of each pool's nodeSelector (and namespaceSelector) for this request. Without
    /// one, only pools selecting all nodes qualify.
    pub pool_filter: Option<PoolFilter>,
}

impl Default for AutoAssignArgs {
    fn default() -> Self {
        Self {
            num4: 0,
            num6: 0,
            handle_id: None,
            attrs: BTreeMap::new(),
            hostname: String::new(),
            ipv4_pools: Vec::new(),
            ipv6_pools: Vec::new(),
            max_blocks_per_host: 0,
            intended_use: AllowedUse::Workload,
            pool_filter: None,
        }
    }
}

impl std::fmt::Debug for AutoAssignArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoAssignArgs")
            .field("num4", &self.num4)
            .field("num6", &self.num6)
            .field("handle_id", &self.handle_id)
            .field("attrs", &self.attrs)
            .field("hostname", &self.hostname)
            .field("ipv4_pools", &self.ipv4_pools)
            .field("ipv6_pools", &self.ipv6_pools)
            .field("max_blocks_per_host", &self.max_blocks_per_host)
            .field("intended_use", &self.intended_use)
            .field("pool_filter", &self.pool_filter.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

/// Arguments of [`IpamClient::assign_ip`].
#[derive(Debug, Clone, Default)]
pub struct AssignIpArgs {
    pub ip: Option<IpAddr>,
    pub handle_id: Option<String>,
    pub attrs: BTreeMap<String, String>,
    pub hostname: String,
    /// When set, the pool's allowedUses must include it.
    pub intended_use: Option<AllowedUse>,
}

/// One assigned address, with the block's mask (as upstream returns it) and its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AssignedIp {
    /// The address with the block's prefix length, e.g. `10.244.1.5/26`.
    pub ip: IpNet,
    pub block: IpNet,
}

impl AssignedIp {
    pub fn addr(&self) -> IpAddr {
        self.ip.addr()
    }
}

/// The assignments of one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpamAssignments {
    pub ips: Vec<AssignedIp>,
    pub num_requested: usize,
    /// Why fewer than requested were assigned.
    pub msgs: Vec<String>,
}

impl IpamAssignments {
    fn add_msg(&mut self, msg: String) {
        if !self.msgs.contains(&msg) {
            self.msgs.push(msg);
        }
    }

    /// Upstream's "Assigned N out of M requested IPvX addresses; …" when short.
    pub fn partial_fulfillment_error(&self, version: IpVersion) -> Option<String> {
        if self.ips.len() >= self.num_requested {
            return None;
        }
        let mut s = format!(
            "assigned {} out of {} requested ipv{} addresses",
            self.ips.len(),
            self.num_requested,
            version.number()
        );
        for m in &self.msgs {
            s.push_str("; ");
            s.push_str(m);
        }
        Some(s)
    }
}

/// Result of [`IpamClient::auto_assign`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoAssignResult {
    pub v4: IpamAssignments,
    pub v6: IpamAssignments,
}

/// Result of [`IpamClient::release_ips`]: partial success is normal.
#[derive(Debug, Default)]
pub struct ReleaseResult {
    pub released: Vec<IpAddr>,
    /// Addresses that were not allocated (already free, or in no block).
    pub not_allocated: Vec<IpAddr>,
    /// Addresses whose release failed (bad sequence number or handle, datastore error).
    pub failed: Vec<(IpAddr, IpamError)>,
}

/// Result of [`IpamClient::release_from_reports`].
#[derive(Debug, Default)]
pub struct ReportReleaseResult {
    pub ips: ReleaseResult,
    pub handles_deleted: Vec<String>,
}

/// A value read from the store with the revision to compare-and-swap against.
#[derive(Debug, Clone)]
struct Versioned<T> {
    value: T,
    rev: Revision,
}

type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The IPAM client. Cheap to clone (shares the store and the pool list).
#[derive(Clone)]
pub struct IpamClient {
    kv: Arc<dyn KvStore>,
    pools: Arc<RwLock<Arc<Vec<PoolConfig>>>>,
    clock: Clock,
}

static JITTER: AtomicU64 = AtomicU64::new(0);

/// A short random pause after a lost race, so that racing writers spread out (upstream retries
/// immediately; with dozens of writers on one block that mostly re-collides).
async fn backoff(attempt: usize) {
    let mut x = JITTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ (OffsetDateTime::now_utc().unix_timestamp_nanos() as u64);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let cap_us = 200 * (attempt.min(20) as u64 + 1);
    tokio::time::sleep(Duration::from_micros(x % cap_us)).await;
}

fn cidr_key(cidr: &IpNet) -> String {
    cidr.to_string()
}

impl IpamClient {
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Self {
            kv,
            pools: Arc::new(RwLock::new(Arc::new(Vec::new()))),
            clock: Arc::new(OffsetDateTime::now_utc),
        }
    }

    /// Uses `pools` (see [`IpamClient::set_pools`]).
    pub fn with_pools(self, pools: Vec<PoolConfig>) -> Self {
        self.set_pools(pools);
        self
    }

    /// Replaces the clock (tests: empty-block reclaim age, claim times, sequence numbers).
    pub fn with_clock(
        mut self,
        clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static,
    ) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The pools the allocator chooses from (all of them, enabled or not; releases need the
    /// disabled ones too).
    pub fn set_pools(&self, pools: Vec<PoolConfig>) {
        let mut guard = self.pools.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(pools);
    }

    pub fn pools(&self) -> Arc<Vec<PoolConfig>> {
        self.pools.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }

    fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }

    fn time_seed(&self) -> u64 {
        self.now().unix_timestamp_nanos() as u64
    }

    // ----- configuration, pools, reservations -----

    /// The IPAM configuration (defaults when none is stored). An invalid stored configuration is
    /// an error rather than silently misbehaving.
    pub async fn get_config(&self) -> Result<IpamConfig, IpamError> {
        match self.kv.get(keys::CONFIG_KEY).await? {
            None => Ok(IpamConfig::default()),
            Some(kv) => {
                let cfg = IpamConfig::from_json(&kv.value)?;
                cfg.validate()?;
                Ok(cfg)
            }
        }
    }

    /// Validates and stores the configuration (compare-and-swap against the stored one).
    pub async fn set_config(&self, cfg: IpamConfig) -> Result<(), IpamError> {
        cfg.validate()?;
        for attempt in 0..DATASTORE_RETRIES {
            let res = match self.kv.get(keys::CONFIG_KEY).await? {
                None => self.kv.create(keys::CONFIG_KEY, cfg.to_json(), None).await,
                Some(kv) => {
                    self.kv
                        .update(keys::CONFIG_KEY, cfg.to_json(), kv.mod_revision, None)
                        .await
                }
            };
            match res.map_err(IpamError::from) {
                Ok(_) => return Ok(()),
                Err(e) if e.is_contention() => backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(IpamError::MaxRetries {
            operation: "set ipam config".into(),
        })
    }

    /// Reads the v3 IPPools from the store (`spec.cidr`, `blockSize`, `nodeSelector`,
    /// `disabled`, `allowedUses`, `assignmentMode`) and uses them. Pools that do not parse are
    /// skipped with a warning naming them.
    pub async fn load_pools_from_store(&self) -> Result<Vec<PoolConfig>, IpamError> {
        let list = self.kv.list(keys::IPPOOL_PREFIX).await?;
        let mut pools = Vec::new();
        for kv in list.kvs {
            match parse_v3_pool(&kv.value) {
                Ok(p) => pools.push(p),
                Err(reason) => warn!(key = %kv.key, %reason, "skipping unparsable ip pool"),
            }
        }
        self.set_pools(pools.clone());
        Ok(pools)
    }

    /// The union of every IPReservation's `spec.reservedCIDRs`.
    pub async fn reservations(&self) -> Result<Reservations, IpamError> {
        let list = self.kv.list(keys::IPRESERVATION_PREFIX).await?;
        let mut cidrs = Vec::new();
        for kv in list.kvs {
            let v: serde_json::Value =
                serde_json::from_slice(&kv.value).map_err(|e| IpamError::Decode {
                    key: kv.key.clone(),
                    reason: e.to_string(),
                })?;
            let Some(items) = v.pointer("/spec/reservedCIDRs").and_then(|x| x.as_array()) else {
                continue;
            };
            for item in items.iter().filter_map(|x| x.as_str()) {
                match parse_cidr_or_ip(item) {
                    Some(c) => cidrs.push(c),
                    None => warn!(key = %kv.key, cidr = item, "ignoring invalid reserved cidr"),
                }
            }
        }
        Ok(Reservations::new(cidrs))
    }

    // ----- typed reads -----

    async fn get_block(
        &self,
        cidr: &IpNet,
    ) -> Result<Option<Versioned<AllocationBlock>>, IpamError> {
        let key = keys::block_key(cidr);
        let Some(kv) = self.kv.get(&key).await? else {
            return Ok(None);
        };
        let value = AllocationBlock::from_json(&kv.value).map_err(|reason| IpamError::Decode {
            key: key.clone(),
            reason,
        })?;
        if value.deleted {
            return Ok(None);
        }
        Ok(Some(Versioned {
            value,
            rev: kv.mod_revision,
        }))
    }

    async fn get_handle(&self, handle: &str) -> Result<Option<Versioned<IpamHandle>>, IpamError> {
        let key = keys::handle_key(handle);
        let Some(kv) = self.kv.get(&key).await? else {
            return Ok(None);
        };
        let value =
            IpamHandle::from_json(&kv.value).map_err(|reason| IpamError::Decode { key, reason })?;
        if value.deleted {
            return Ok(None);
        }
        Ok(Some(Versioned {
            value,
            rev: kv.mod_revision,
        }))
    }

    async fn get_affinity(
        &self,
        owner: &Affinity,
        cidr: &IpNet,
    ) -> Result<Option<Versioned<BlockAffinity>>, IpamError> {
        let key = keys::affinity_key(owner, cidr);
        let Some(kv) = self.kv.get(&key).await? else {
            return Ok(None);
        };
        let value = BlockAffinity::from_json(&kv.value)
            .map_err(|reason| IpamError::Decode { key, reason })?;
        if value.deleted {
            return Ok(None);
        }
        Ok(Some(Versioned {
            value,
            rev: kv.mod_revision,
        }))
    }

    /// Blocks of one family, indexed for the block chooser.
    async fn block_index(
        &self,
        version: IpVersion,
        reservations: &Reservations,
    ) -> Result<BlockIndex, IpamError> {
        let list = self.kv.list(&keys::block_prefix(version)).await?;
        let mut out = Vec::with_capacity(list.kvs.len());
        for kv in list.kvs {
            match AllocationBlock::from_json(&kv.value) {
                Ok(b) if !b.deleted => out.push(ExistingBlock {
                    cidr: b.cidr,
                    affinity: b.affinity.clone(),
                    num_free: b.num_free(reservations),
                    empty: b.is_empty(),
                    claim_time: b.claim_time(),
                    sequence_number: b.sequence_number,
                }),
                Ok(_) => {}
                // An undecodable block still occupies its CIDR: never claim over it.
                Err(reason) => {
                    warn!(key = %kv.key, %reason, "invalid block");
                    if let Some(cidr) = keys::parse_block_key(&kv.key) {
                        out.push(ExistingBlock {
                            cidr,
                            affinity: Some("invalid".into()),
                            num_free: 0,
                            empty: false,
                            claim_time: None,
                            sequence_number: 0,
                        });
                    }
                }
            }
        }
        Ok(BlockIndex::new(out))
    }

    // ----- auto-assign -----

    /// Assigns `num4` IPv4 and `num6` IPv6 addresses (upstream's `AutoAssign`). Fewer than asked
    /// is not an error (see [`IpamAssignments::partial_fulfillment_error`]); on an error, the
    /// addresses this call already assigned are released again before returning it.
    pub async fn auto_assign(&self, args: AutoAssignArgs) -> Result<AutoAssignResult, IpamError> {
        validate_name(&args.hostname).map_err(|_| IpamError::InvalidHostname)?;
        if let Some(h) = &args.handle_id {
            validate_name(h).map_err(|_| IpamError::InvalidHandle)?;
        }
        let mut result = AutoAssignResult::default();
        if args.num4 > 0 {
            result.v4 = self
                .auto_assign_family(&args, IpVersion::V4, args.num4, &args.ipv4_pools)
                .await?;
        }
        if args.num6 > 0 {
            match self
                .auto_assign_family(&args, IpVersion::V6, args.num6, &args.ipv6_pools)
                .await
            {
                Ok(a) => result.v6 = a,
                Err(e) => {
                    self.rollback(&result.v4.ips, args.handle_id.as_deref())
                        .await;
                    return Err(e);
                }
            }
        }
        Ok(result)
    }

    async fn rollback(&self, ips: &[AssignedIp], handle: Option<&str>) {
        if ips.is_empty() {
            return;
        }
        let opts = ips
            .iter()
            .map(|a| ReleaseOptions {
                address: a.addr(),
                handle: handle.map(str::to_string),
                sequence_number: None,
            })
            .collect();
        match self.release_ips(opts).await {
            Ok(r) if r.failed.is_empty() => {}
            Ok(r) => warn!(
                failed = r.failed.len(),
                "rollback of partial assignment incomplete"
            ),
            Err(e) => warn!(error = %e, "rollback of partial assignment failed"),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(host = %args.hostname, ver = version.number(), num))]
    async fn auto_assign_family(
        &self,
        args: &AutoAssignArgs,
        version: IpVersion,
        num: usize,
        requested: &[IpNet],
    ) -> Result<IpamAssignments, IpamError> {
        let config = self.get_config().await?;
        let reservations = self.reservations().await?;
        let pools = self.pools();
        let sel = pool::select_pools(
            &pools,
            version,
            requested,
            args.intended_use,
            &args.hostname,
            args.pool_filter.as_ref(),
        )?;
        let owner = if args.intended_use == AllowedUse::LoadBalancer {
            Affinity::virtual_(LOAD_BALANCER_AFFINITY)
        } else {
            Affinity::host(&args.hostname)
        };

        // This host's affinities of this family, split into usable ones and the rest.
        let affs = self
            .kv
            .list(&keys::affinity_prefix(&owner, version))
            .await?;
        let mut affine: VecDeque<IpNet> = VecDeque::new();
        for kv in &affs.kvs {
            let Some((_, cidr)) = keys::parse_affinity_key(&kv.key) else {
                continue;
            };
            if sel.usable.iter().any(|p| p.cidr.contains(&cidr)) {
                affine.push_back(cidr);
            } else if !sel.selecting_node.iter().any(|p| p.cidr.contains(&cidr))
                && sel.enabled.iter().any(|p| p.cidr.contains(&cidr))
            {
                // The pool no longer selects this node: give the block back if it is empty.
                match self.release_block_affinity(&owner, &cidr, true, None).await {
                    Ok(()) => {
                        info!(block = %cidr, "released empty block whose pool no longer selects this node")
                    }
                    Err(e) => debug!(block = %cidr, error = %e, "kept affine block"),
                }
            }
        }
        let mut owned = affine.len() as u32;
        let max_blocks = config.effective_max_blocks(args.max_blocks_per_host);

        let mut out = IpamAssignments {
            num_requested: num,
            ..Default::default()
        };
        let handle = args.handle_id.as_deref();
        let attrs = Some(&args.attrs);
        let mut block_failures = 0;
        while out.ips.len() < num {
            let allow_new_claim = owned < max_blocks;
            let found = self
                .find_or_claim_block(
                    &owner,
                    &mut affine,
                    max_blocks,
                    allow_new_claim,
                    &config,
                    &sel.usable,
                    &reservations,
                    version,
                )
                .await;
            let (block, newly_claimed) = match found {
                Ok(Some(x)) => x,
                Ok(None) => {
                    if config.strict_affinity {
                        out.add_msg(
                            "no more free affine blocks and strict affinity enabled".into(),
                        );
                    }
                    break;
                }
                Err(IpamError::BlockLimit { limit }) => {
                    warn!(owned, limit, "host is at its block limit");
                    self.rollback(&out.ips, handle).await;
                    return Err(IpamError::BlockLimit { limit });
                }
                Err(e) => {
                    self.rollback(&out.ips, handle).await;
                    return Err(e);
                }
            };
            if newly_claimed {
                owned += 1;
            }
            let rem = num - out.ips.len();
            match self
                .assign_from_block(
                    block,
                    rem,
                    handle,
                    attrs,
                    &owner,
                    config.strict_affinity,
                    &reservations,
                )
                .await
            {
                Ok(ips) => out.ips.extend(ips),
                Err(e @ (IpamError::Kv(_) | IpamError::MaxRetries { .. })) => {
                    self.rollback(&out.ips, handle).await;
                    return Err(e);
                }
                Err(e) => {
                    // A block that changed hands between checks; bounded so that a block that
                    // keeps failing cannot spin this loop.
                    warn!(error = %e, "failed to assign from block");
                    out.add_msg(format!("failed to assign ips from block: {e}"));
                    block_failures += 1;
                    if block_failures >= 10 {
                        break;
                    }
                }
            }
        }

        let rem = num - out.ips.len();
        if !config.strict_affinity && rem > 0 {
            info!(rem, "assigning from non-affine blocks");
            let index = self.block_index(version, &reservations).await?;
            let candidates =
                pool::borrow_candidates(&sel.usable, &index, &owner.name, self.time_seed());
            for cidr in candidates {
                let rem = num - out.ips.len();
                if rem == 0 {
                    break;
                }
                let Some(b) = self.get_block(&cidr).await? else {
                    continue;
                };
                match self
                    .assign_from_block(b, rem, handle, attrs, &owner, false, &reservations)
                    .await
                {
                    Ok(ips) => out.ips.extend(ips),
                    Err(e @ IpamError::Kv(_)) => {
                        self.rollback(&out.ips, handle).await;
                        return Err(e);
                    }
                    Err(e) => warn!(block = %cidr, error = %e, "failed to borrow from block"),
                }
            }
            if out.ips.len() < num {
                let names: Vec<String> = sel.usable.iter().map(|p| p.cidr.to_string()).collect();
                out.add_msg(format!("no ips available in pools: {names:?}"));
            }
        }
        Ok(out)
    }

    /// Upstream's `findOrClaimBlock`: the first affine block with a free address, else (within
    /// the cap, when auto-allocation is on) a newly claimed block. `Ok(None)` when there is no
    /// free block to claim. Returns whether the block was newly claimed.
    #[allow(clippy::too_many_arguments)]
    async fn find_or_claim_block(
        &self,
        owner: &Affinity,
        affine: &mut VecDeque<IpNet>,
        max_blocks: u32,
        allow_new_claim: bool,
        config: &IpamConfig,
        pools: &[PoolConfig],
        reservations: &Reservations,
        version: IpVersion,
    ) -> Result<Option<(Versioned<AllocationBlock>, bool)>, IpamError> {
        while let Some(cidr) = affine.pop_front() {
            if !reservations.is_empty() && reservations.matches_whole(&cidr) {
                continue;
            }
            for attempt in 0..DATASTORE_RETRIES {
                let Some(aff) = self.get_affinity(owner, &cidr).await? else {
                    break;
                };
                match self.block_from_affinity(owner, &cidr, aff).await {
                    Ok(b) => {
                        if b.value.num_free(reservations) >= 1 {
                            // Keep it for the next round: it may still have room afterwards.
                            affine.push_front(cidr);
                            return Ok(Some((b, false)));
                        }
                        break;
                    }
                    Err(e) if e.is_contention() => backoff(attempt).await,
                    Err(e) => {
                        debug!(block = %cidr, error = %e, "affine block unusable, trying the next");
                        break;
                    }
                }
            }
        }
        if !allow_new_claim {
            return Err(IpamError::BlockLimit { limit: max_blocks });
        }
        if !config.auto_allocate_blocks {
            return Err(IpamError::AutoAllocateDisabled);
        }
        for attempt in 0..DATASTORE_RETRIES {
            let index = self.block_index(version, reservations).await?;
            let search = pool::find_usable_block(
                pools,
                &index,
                owner,
                reservations,
                self.now(),
                self.time_seed(),
            );
            let subnet = match search.choice {
                Some(BlockChoice::Unclaimed(c) | BlockChoice::OwnWithSpace(c)) => c,
                None => {
                    let mut reclaimed = None;
                    for cand in &search.reclaimable {
                        let Some(prev) = cand.affinity.as_deref().and_then(Affinity::parse) else {
                            continue;
                        };
                        match self
                            .release_block_affinity(
                                &prev,
                                &cand.cidr,
                                true,
                                Some(cand.sequence_number),
                            )
                            .await
                        {
                            Ok(()) => {
                                info!(block = %cand.cidr, from = %prev, "reclaimed empty block");
                                reclaimed = Some(cand.cidr);
                                break;
                            }
                            Err(e) => debug!(block = %cand.cidr, error = %e, "could not reclaim"),
                        }
                    }
                    match reclaimed {
                        Some(c) => c,
                        None => return Ok(None),
                    }
                }
            };
            match self.claim_block(owner, &subnet).await {
                Ok(b) => {
                    if b.value.num_free(reservations) >= 1 {
                        info!(block = %subnet, "claimed block");
                        return Ok(Some((b, true)));
                    }
                    // Ours but full (raced with another process on this host): search again.
                }
                Err(IpamError::ClaimConflict { .. }) => {}
                Err(e) if e.is_contention() => {}
                Err(e) => return Err(e),
            }
            backoff(attempt).await;
        }
        Err(IpamError::MaxRetries {
            operation: "claim block".into(),
        })
    }

    /// Claims `cidr` for `owner` in one transaction (affinity confirmed + block created).
    /// If the block already exists and is ours, makes sure our affinity is confirmed and
    /// returns it; if it is someone else's, removes a leftover claim of ours and reports the
    /// conflict.
    async fn claim_block(
        &self,
        owner: &Affinity,
        cidr: &IpNet,
    ) -> Result<Versioned<AllocationBlock>, IpamError> {
        let now = self.now();
        let aff_key = keys::affinity_key(owner, cidr);
        let block_key = keys::block_key(cidr);
        let existing_aff = self.get_affinity(owner, cidr).await?;
        let mut block = AllocationBlock::new(*cidr, now)?;
        block.set_affinity(owner, now);
        let aff_op = match &existing_aff {
            None => TxnOp::Create {
                key: aff_key.clone(),
                value: BlockAffinity::confirmed().to_json(),
                lease: None,
            },
            Some(a) => TxnOp::Update {
                key: aff_key.clone(),
                value: BlockAffinity::confirmed().to_json(),
                expected_revision: a.rev,
                lease: None,
            },
        };
        let ops = vec![
            aff_op,
            TxnOp::Create {
                key: block_key.clone(),
                value: block.to_json(),
                lease: None,
            },
        ];
        match self.kv.txn(ops).await {
            Ok(rev) => Ok(Versioned { value: block, rev }),
            Err(KvError::AlreadyExists { key }) if key == block_key => {
                let Some(b) = self.get_block(cidr).await? else {
                    return Err(KvError::NotFound { key: block_key }.into());
                };
                if b.value.affinity.as_deref() == Some(owner.to_string().as_str()) {
                    // Another process on this host claimed it: confirm our affinity and use it.
                    self.ensure_affinity_confirmed(owner, cidr).await?;
                    return Ok(b);
                }
                if let Some(a) = existing_aff
                    && !a.value.state.is_confirmed()
                {
                    // Our stale pending claim (e.g. from an upstream writer that crashed).
                    let _ = self.kv.delete(&aff_key, Some(a.rev)).await;
                }
                Err(IpamError::ClaimConflict {
                    block: *cidr,
                    owner: b.value.affinity.unwrap_or_else(|| "<none>".into()),
                    wanted: owner.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn ensure_affinity_confirmed(
        &self,
        owner: &Affinity,
        cidr: &IpNet,
    ) -> Result<(), IpamError> {
        let key = keys::affinity_key(owner, cidr);
        let value = BlockAffinity::confirmed().to_json();
        match self.get_affinity(owner, cidr).await? {
            None => match self.kv.create(&key, value, None).await {
                Ok(_) | Err(KvError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            },
            Some(a) if a.value.state.is_confirmed() => Ok(()),
            Some(a) => {
                self.kv.update(&key, value, a.rev, None).await?;
                Ok(())
            }
        }
    }

    /// Upstream's `getBlockFromAffinity`: the block an affinity of ours refers to, recreating it
    /// if missing, deleting the affinity if the block belongs to someone else, confirming the
    /// affinity if it was left pending.
    async fn block_from_affinity(
        &self,
        owner: &Affinity,
        cidr: &IpNet,
        aff: Versioned<BlockAffinity>,
    ) -> Result<Versioned<AllocationBlock>, IpamError> {
        let aff_key = keys::affinity_key(owner, cidr);
        let block_key = keys::block_key(cidr);
        let confirmed = BlockAffinity::confirmed().to_json();
        let Some(b) = self.get_block(cidr).await? else {
            info!(block = %cidr, "affinity without block: recreating the block");
            let now = self.now();
            let mut block = AllocationBlock::new(*cidr, now)?;
            block.set_affinity(owner, now);
            let rev = self
                .kv
                .txn(vec![
                    TxnOp::Update {
                        key: aff_key,
                        value: confirmed,
                        expected_revision: aff.rev,
                        lease: None,
                    },
                    TxnOp::Create {
                        key: block_key,
                        value: block.to_json(),
                        lease: None,
                    },
                ])
                .await?;
            return Ok(Versioned { value: block, rev });
        };
        if b.value.affinity.as_deref() != Some(owner.to_string().as_str()) {
            warn!(block = %cidr, block_affinity = ?b.value.affinity, "deleting stale affinity");
            self.kv.delete(&aff_key, Some(aff.rev)).await?;
            return Err(IpamError::ClaimConflict {
                block: *cidr,
                owner: b.value.affinity.unwrap_or_else(|| "<none>".into()),
                wanted: owner.to_string(),
            });
        }
        if !aff.value.state.is_confirmed() {
            let mut block = b.value.clone();
            block.bump_sequence();
            let rev = self
                .kv
                .txn(vec![
                    TxnOp::Update {
                        key: aff_key,
                        value: confirmed,
                        expected_revision: aff.rev,
                        lease: None,
                    },
                    TxnOp::Update {
                        key: block_key,
                        value: block.to_json(),
                        expected_revision: b.rev,
                        lease: None,
                    },
                ])
                .await?;
            return Ok(Versioned { value: block, rev });
        }
        Ok(b)
    }

    /// Assigns up to `num` addresses from `block`, writing block and handle atomically; re-reads
    /// and retries on conflict. Returns the addresses assigned (none when the block is full or
    /// gone).
    #[allow(clippy::too_many_arguments)]
    async fn assign_from_block(
        &self,
        mut block: Versioned<AllocationBlock>,
        num: usize,
        handle: Option<&str>,
        attrs: Option<&BTreeMap<String, String>>,
        owner: &Affinity,
        affinity_check: bool,
        reservations: &Reservations,
    ) -> Result<Vec<AssignedIp>, IpamError> {
        let cidr = block.value.cidr;
        for attempt in 0..DATASTORE_RETRIES {
            let h = match handle {
                Some(h) => self.get_handle(h).await?,
                None => None,
            };
            let mut b = block.value.clone();
            let ips = b.auto_assign(num, handle, attrs, owner, affinity_check, reservations)?;
            if ips.is_empty() {
                return Ok(Vec::new());
            }
            b.bump_sequence();
            let mut ops = vec![TxnOp::Update {
                key: keys::block_key(&cidr),
                value: b.to_json(),
                expected_revision: block.rev,
                lease: None,
            }];
            if let Some(id) = handle {
                ops.push(handle_increment_op(id, h, &cidr, ips.len() as u64));
            }
            match self.kv.txn(ops).await.map_err(IpamError::from) {
                Ok(_) => {
                    return Ok(ips
                        .into_iter()
                        .map(|ip| AssignedIp {
                            ip: b.with_block_mask(ip),
                            block: cidr,
                        })
                        .collect());
                }
                Err(e) if e.is_contention() => {
                    backoff(attempt).await;
                    match self.get_block(&cidr).await? {
                        Some(fresh) => block = fresh,
                        None => return Ok(Vec::new()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(IpamError::MaxRetries {
            operation: format!("assign from block {cidr}"),
        })
    }

    // ----- assign a specific address -----

    /// Assigns one specific address (upstream's `AssignIP`), claiming its block for the host if
    /// the block does not exist yet. With strictAffinity, the block must be ours.
    pub async fn assign_ip(&self, args: AssignIpArgs) -> Result<AssignedIp, IpamError> {
        validate_name(&args.hostname).map_err(|_| IpamError::InvalidHostname)?;
        if let Some(h) = &args.handle_id {
            validate_name(h).map_err(|_| IpamError::InvalidHandle)?;
        }
        let ip = args.ip.ok_or(IpamError::MissingAddress)?;
        let pools = self.pools();
        let pool = pools
            .iter()
            .filter(|p| !p.disabled)
            .find(|p| p.cidr.contains(&ip))
            .ok_or(IpamError::NotInPool(ip))?;
        if let Some(use_) = args.intended_use
            && !pool.allows(use_)
        {
            return Err(IpamError::UseNotAllowed {
                ip,
                pool: pool.name.clone(),
                use_,
            });
        }
        let owner = if args.intended_use == Some(AllowedUse::LoadBalancer) {
            Affinity::virtual_(LOAD_BALANCER_AFFINITY)
        } else {
            Affinity::host(&args.hostname)
        };
        let cidr = pool.block_for(ip).ok_or(IpamError::NotInPool(ip))?;
        let config = self.get_config().await?;
        let handle = args.handle_id.as_deref();
        for attempt in 0..DATASTORE_RETRIES {
            let block = match self.get_block(&cidr).await? {
                Some(b) => b,
                None => match self.claim_block(&owner, &cidr).await {
                    Ok(b) => b,
                    Err(e) if e.is_contention() || matches!(e, IpamError::ClaimConflict { .. }) => {
                        backoff(attempt).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let h = match handle {
                Some(h) => self.get_handle(h).await?,
                None => None,
            };
            let mut b = block.value.clone();
            b.assign(
                ip,
                handle,
                Some(&args.attrs),
                &owner,
                config.strict_affinity,
            )?;
            b.bump_sequence();
            let mut ops = vec![TxnOp::Update {
                key: keys::block_key(&cidr),
                value: b.to_json(),
                expected_revision: block.rev,
                lease: None,
            }];
            if let Some(id) = handle {
                ops.push(handle_increment_op(id, h, &cidr, 1));
            }
            match self.kv.txn(ops).await.map_err(IpamError::from) {
                Ok(_) => {
                    return Ok(AssignedIp {
                        ip: b.with_block_mask(ip),
                        block: cidr,
                    });
                }
                Err(e) if e.is_contention() => backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(IpamError::MaxRetries {
            operation: format!("assign ip {ip}"),
        })
    }

    // ----- release -----

    /// Releases addresses (upstream's `ReleaseIPs`). Addresses are grouped by block; each block
    /// is released atomically with its handles. A block whose options fail (bad sequence number
    /// or handle) releases nothing; other blocks proceed.
    pub async fn release_ips(&self, opts: Vec<ReleaseOptions>) -> Result<ReleaseResult, IpamError> {
        let pools = self.pools();
        let mut result = ReleaseResult::default();
        let mut by_block: BTreeMap<IpNet, Vec<ReleaseOptions>> = BTreeMap::new();
        let mut scanned: BTreeMap<IpVersion, Vec<IpNet>> = BTreeMap::new();
        for opt in opts {
            let ip = opt.address;
            let cidr = match pool::pool_for_ip(&pools, ip).and_then(|p| p.block_for(ip)) {
                Some(c) => Some(c),
                None => {
                    // Not in any configured pool: find the block by scanning.
                    let version = IpVersion::of_addr(&ip);
                    if let std::collections::btree_map::Entry::Vacant(slot) = scanned.entry(version)
                    {
                        let list = self.kv.list(&keys::block_prefix(version)).await?;
                        slot.insert(
                            list.kvs
                                .iter()
                                .filter_map(|kv| keys::parse_block_key(&kv.key))
                                .collect(),
                        );
                    }
                    scanned
                        .get(&version)
                        .and_then(|v| v.iter().find(|c| c.contains(&ip)).copied())
                }
            };
            match cidr {
                Some(c) => by_block.entry(c).or_default().push(opt),
                None => result.not_allocated.push(ip),
            }
        }
        for (cidr, opts) in by_block {
            match self.release_from_block(&cidr, &opts).await {
                Ok(out) => {
                    result.released.extend(out.released);
                    result.not_allocated.extend(out.not_allocated);
                }
                Err(e) => {
                    warn!(block = %cidr, error = %e, "release failed");
                    // The first address carries the error itself, the others of the block a
                    // copy of its message (nothing in the block was released).
                    let reason = e.to_string();
                    let mut first = Some(e);
                    for o in opts {
                        let err = first.take().unwrap_or_else(|| IpamError::ReleaseFailed {
                            block: cidr,
                            reason: reason.clone(),
                        });
                        result.failed.push((o.address, err));
                    }
                }
            }
        }
        Ok(result)
    }

    async fn release_from_block(
        &self,
        cidr: &IpNet,
        opts: &[ReleaseOptions],
    ) -> Result<crate::block::ReleaseOutcome, IpamError> {
        for attempt in 0..DATASTORE_RETRIES {
            let Some(block) = self.get_block(cidr).await? else {
                return Ok(crate::block::ReleaseOutcome {
                    not_allocated: opts.iter().map(|o| o.address).collect(),
                    ..Default::default()
                });
            };
            let mut b = block.value.clone();
            let out = b.release(opts)?;
            if out.released.is_empty() {
                return Ok(out);
            }
            let mut ops = vec![block_write_op(&mut b, block.rev)];
            for (h, n) in &out.released_by_handle {
                if let Some(op) = self.handle_decrement_op(h, cidr, *n).await? {
                    ops.push(op);
                }
            }
            match self.kv.txn(ops).await.map_err(IpamError::from) {
                Ok(_) => return Ok(out),
                Err(e) if e.is_contention() => backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(IpamError::MaxRetries {
            operation: format!("release from block {cidr}"),
        })
    }

    /// Releases every address recorded under `handle` (upstream's `ReleaseByHandle`). A missing
    /// handle is [`IpamError::HandleNotFound`] (callers such as CNI DEL treat it as success).
    /// Returns the addresses released.
    pub async fn release_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let handle = crate::block::sanitize_handle(handle);
        let h = self
            .get_handle(handle)
            .await?
            .ok_or_else(|| IpamError::HandleNotFound(handle.to_string()))?;
        let mut released = Vec::new();
        for block_str in h.value.block.keys() {
            let Ok(cidr) = block_str.parse::<IpNet>() else {
                warn!(handle, block = %block_str, "handle names an invalid block cidr");
                continue;
            };
            released.extend(
                self.release_handle_in_block(handle, &cidr, block_str)
                    .await?,
            );
        }
        Ok(released)
    }

    async fn release_handle_in_block(
        &self,
        handle: &str,
        cidr: &IpNet,
        block_str: &str,
    ) -> Result<Vec<IpAddr>, IpamError> {
        for attempt in 0..DATASTORE_RETRIES {
            let block = self.get_block(cidr).await?;
            let (mut ops, ips) = match &block {
                Some(bv) => {
                    let mut b = bv.value.clone();
                    let ips = b.release_by_handle(handle, None);
                    if ips.is_empty() {
                        (Vec::new(), ips)
                    } else {
                        (vec![block_write_op(&mut b, bv.rev)], ips)
                    }
                }
                None => (Vec::new(), Vec::new()),
            };
            // Decrement by what was released; an entry that over-counts (block gone, or
            // addresses already released) is dropped so the handle converges.
            let Some(hv) = self.get_handle(handle).await? else {
                return Ok(ips);
            };
            let mut hobj = hv.value.clone();
            if ips.is_empty() {
                hobj.block.remove(block_str);
            } else {
                hobj.decrement(block_str, ips.len() as u64);
                if block
                    .as_ref()
                    .is_some_and(|b| b.value.ips_by_handle(handle).len() == ips.len())
                {
                    hobj.block.remove(block_str);
                }
            }
            if hobj != hv.value {
                ops.push(handle_write_op(handle, &hobj, hv.rev));
            }
            if ops.is_empty() {
                return Ok(ips);
            }
            match self.kv.txn(ops).await.map_err(IpamError::from) {
                Ok(_) => return Ok(ips),
                Err(e) if e.is_contention() => backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(IpamError::MaxRetries {
            operation: format!("release handle {handle} in block {cidr}"),
        })
    }

    async fn handle_decrement_op(
        &self,
        handle: &str,
        cidr: &IpNet,
        n: u64,
    ) -> Result<Option<TxnOp>, IpamError> {
        let Some(hv) = self.get_handle(handle).await? else {
            warn!(
                handle,
                "released addresses of a handle that has no handle object"
            );
            return Ok(None);
        };
        let mut h = hv.value;
        h.decrement(&cidr_key(cidr), n);
        Ok(Some(handle_write_op(handle, &h, hv.rev)))
    }

    // ----- queries -----

    /// Addresses recorded under `handle`.
    pub async fn ips_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let h = self
            .get_handle(handle)
            .await?
            .ok_or_else(|| IpamError::HandleNotFound(handle.to_string()))?;
        let mut out = Vec::new();
        for block_str in h.value.block.keys() {
            let Ok(cidr) = block_str.parse::<IpNet>() else {
                continue;
            };
            if let Some(b) = self.get_block(&cidr).await? {
                out.extend(b.value.ips_by_handle(handle));
            }
        }
        Ok(out)
    }

    /// The attributes and handle stored with `ip` (`Ok(None)` when it is not allocated).
    pub async fn get_assignment_attributes(
        &self,
        ip: IpAddr,
    ) -> Result<Option<(BTreeMap<String, String>, Option<String>)>, IpamError> {
        let pools = self.pools();
        let cidr = match pool::pool_for_ip(&pools, ip).and_then(|p| p.block_for(ip)) {
            Some(c) => c,
            None => {
                let list = self
                    .kv
                    .list(&keys::block_prefix(IpVersion::of_addr(&ip)))
                    .await?;
                match list
                    .kvs
                    .iter()
                    .filter_map(|kv| keys::parse_block_key(&kv.key))
                    .find(|c| c.contains(&ip))
                {
                    Some(c) => c,
                    None => return Ok(None),
                }
            }
        };
        let Some(b) = self.get_block(&cidr).await? else {
            return Ok(None);
        };
        Ok(b.value
            .attribute_for(ip)?
            .map(|a| (a.secondary.clone().unwrap_or_default(), a.handle_id.clone())))
    }

    // ----- affinities -----

    /// Releases `owner`'s claim on `cidr` (upstream's `releaseBlockAffinity`): an empty block is
    /// deleted, a non-empty one loses its affinity (its addresses stay allocated), the affinity
    /// object is deleted — all in one transaction. With `must_be_empty`, a non-empty block is
    /// [`IpamError::BlockNotEmpty`]; with `required_sequence`, a block written since is
    /// [`IpamError::BlockChanged`].
    pub async fn release_block_affinity(
        &self,
        owner: &Affinity,
        cidr: &IpNet,
        must_be_empty: bool,
        required_sequence: Option<u64>,
    ) -> Result<(), IpamError> {
        let aff_key = keys::affinity_key(owner, cidr);
        for attempt in 0..DATASTORE_RETRIES {
            let aff = self.get_affinity(owner, cidr).await?;
            let Some(block) = self.get_block(cidr).await? else {
                if let Some(a) = aff {
                    // Dangling affinity: just remove it.
                    match self.kv.delete(&aff_key, Some(a.rev)).await {
                        Ok(_) | Err(KvError::NotFound { .. }) => return Ok(()),
                        Err(KvError::Conflict { .. }) => {
                            backoff(attempt).await;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                return Err(IpamError::BlockNotFound(*cidr));
            };
            if let Some(seq) = required_sequence
                && seq != block.value.sequence_number
            {
                return Err(IpamError::BlockChanged(*cidr));
            }
            let mine = owner.to_string();
            if let Some(actual) = &block.value.affinity
                && *actual != mine
            {
                if let Some(a) = aff {
                    let _ = self.kv.delete(&aff_key, Some(a.rev)).await;
                }
                return Err(IpamError::ClaimConflict {
                    block: *cidr,
                    owner: actual.clone(),
                    wanted: mine,
                });
            }
            if block.value.affinity.is_none() && aff.is_none() {
                return Err(IpamError::AffinityNotFound {
                    owner: mine,
                    block: *cidr,
                });
            }
            let empty = block.value.is_empty();
            if must_be_empty && !empty {
                return Err(IpamError::BlockNotEmpty(*cidr));
            }
            let mut ops = Vec::new();
            if empty {
                ops.push(TxnOp::Delete {
                    key: keys::block_key(cidr),
                    expected_revision: Some(block.rev),
                });
            } else {
                let mut b = block.value.clone();
                b.clear_affinity();
                b.bump_sequence();
                ops.push(TxnOp::Update {
                    key: keys::block_key(cidr),
                    value: b.to_json(),
                    expected_revision: block.rev,
                    lease: None,
                });
            }
            if let Some(a) = &aff {
                ops.push(TxnOp::Delete {
                    key: aff_key.clone(),
                    expected_revision: Some(a.rev),
                });
            }
            match self.kv.txn(ops).await.map_err(IpamError::from) {
                Ok(_) => return Ok(()),
                Err(e) if e.is_contention() => backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(IpamError::MaxRetries {
            operation: format!("release affinity for block {cidr}"),
        })
    }

    /// Releases every affinity of `host` (both families); used when a node is removed. Returns
    /// the blocks released; blocks claimed by others meanwhile are skipped.
    pub async fn release_host_affinities(
        &self,
        host: &str,
        must_be_empty: bool,
    ) -> Result<Vec<IpNet>, IpamError> {
        let owner = Affinity::host(host);
        let mut done = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let list = self
                .kv
                .list(&keys::affinity_prefix(&owner, version))
                .await?;
            for kv in list.kvs {
                let Some((_, cidr)) = keys::parse_affinity_key(&kv.key) else {
                    continue;
                };
                match self
                    .release_block_affinity(&owner, &cidr, must_be_empty, None)
                    .await
                {
                    Ok(()) => done.push(cidr),
                    Err(IpamError::ClaimConflict { .. } | IpamError::BlockNotEmpty(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(done)
    }

    /// Claims every block of the pool inside `cidr` for `host` (upstream's `ClaimAffinity`).
    /// Returns (claimed, claimed by someone else).
    pub async fn claim_affinity(
        &self,
        cidr: IpNet,
        host: &str,
    ) -> Result<(Vec<IpNet>, Vec<IpNet>), IpamError> {
        let pools = self.pools();
        let pool = pool::pool_for_ip(&pools, cidr.network())
            .ok_or(IpamError::NotInPool(cidr.network()))?;
        let owner = Affinity::host(host);
        let mut sub = pool.clone();
        sub.cidr = cidr.trunc();
        let (mut claimed, mut failed) = (Vec::new(), Vec::new());
        for block in sub.blocks() {
            let mut ok = None;
            for attempt in 0..DATASTORE_RETRIES {
                match self.claim_block(&owner, &block).await {
                    Ok(_) => {
                        ok = Some(true);
                        break;
                    }
                    Err(IpamError::ClaimConflict { .. }) => {
                        ok = Some(false);
                        break;
                    }
                    Err(e) if e.is_contention() => backoff(attempt).await,
                    Err(e) => return Err(e),
                }
            }
            match ok {
                Some(true) => claimed.push(block),
                Some(false) => failed.push(block),
                None => {
                    return Err(IpamError::MaxRetries {
                        operation: format!("claim block {block}"),
                    });
                }
            }
        }
        Ok((claimed, failed))
    }

    // ----- check -----

    /// Everything under `/calico/ipam/v2/`, read in one listing (one revision).
    pub async fn snapshot(&self) -> Result<IpamSnapshot, IpamError> {
        let list = self.kv.list(keys::IPAM_ROOT).await?;
        let mut snap = IpamSnapshot {
            revision: list.revision,
            ..Default::default()
        };
        for kv in list.kvs {
            if kv.key.starts_with(keys::BLOCK_PREFIX) {
                match AllocationBlock::from_json(&kv.value) {
                    Ok(b) if b.deleted => {}
                    Ok(b) => snap.blocks.push(b),
                    Err(reason) => snap.invalid_blocks.push(InvalidBlock {
                        key: kv.key,
                        reason,
                    }),
                }
            } else if let Some(id) = keys::parse_handle_key(&kv.key) {
                match IpamHandle::from_json(&kv.value) {
                    Ok(h) if h.deleted => {}
                    Ok(h) => {
                        snap.handles.insert(id.to_string(), h);
                    }
                    Err(reason) => {
                        return Err(IpamError::Decode {
                            key: kv.key,
                            reason,
                        });
                    }
                }
            } else if let Some((owner, cidr)) = keys::parse_affinity_key(&kv.key) {
                let a =
                    BlockAffinity::from_json(&kv.value).map_err(|reason| IpamError::Decode {
                        key: kv.key.clone(),
                        reason,
                    })?;
                if !a.deleted {
                    snap.affinities.push(AffinityRecord {
                        owner,
                        cidr,
                        state: a.state,
                    });
                }
            }
        }
        Ok(snap)
    }

    /// Runs `ipam check` against the current datastore contents.
    pub async fn check(&self, live: &LiveWorkloads) -> Result<CheckReport, IpamError> {
        Ok(check::check(&self.snapshot().await?, live))
    }

    /// `ipam release --from-report`: releases the addresses leaked in every report (each guarded
    /// by its handle and sequence number) and deletes handle objects that every report found
    /// without addresses and that still have none.
    pub async fn release_from_reports(
        &self,
        reports: &[CheckReport],
    ) -> Result<ReportReleaseResult, IpamError> {
        let plan = check::release_plan(reports);
        let ips = self.release_ips(plan.ips).await?;
        let mut handles_deleted = Vec::new();
        if !plan.empty_handles.is_empty() {
            let snap = self.snapshot().await?;
            let in_use: BTreeSet<String> = snap
                .blocks
                .iter()
                .flat_map(|b| {
                    b.allocated()
                        .filter_map(|(_, _, a)| a.handle_id.clone())
                        .collect::<Vec<_>>()
                })
                .collect();
            for h in plan.empty_handles {
                if in_use.contains(&h) {
                    continue;
                }
                let Some(hv) = self.get_handle(&h).await? else {
                    continue;
                };
                match self.kv.delete(&keys::handle_key(&h), Some(hv.rev)).await {
                    Ok(_) => handles_deleted.push(h),
                    Err(KvError::Conflict { .. } | KvError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(ReportReleaseResult {
            ips,
            handles_deleted,
        })
    }

    /// Per-pool utilization (`ipam show`).
    pub async fn utilization(&self) -> Result<Vec<check::PoolUsage>, IpamError> {
        let snap = self.snapshot().await?;
        let reservations = self.reservations().await?;
        Ok(check::utilization(&snap, &self.pools(), &reservations))
    }
}

/// Write (or delete, when empty and unaffine) a modified block, bumping its sequence number.
fn block_write_op(b: &mut AllocationBlock, rev: Revision) -> TxnOp {
    let key = keys::block_key(&b.cidr);
    if b.is_empty() && b.affinity.is_none() {
        TxnOp::Delete {
            key,
            expected_revision: Some(rev),
        }
    } else {
        b.bump_sequence();
        TxnOp::Update {
            key,
            value: b.to_json(),
            expected_revision: rev,
            lease: None,
        }
    }
}

fn handle_write_op(id: &str, h: &IpamHandle, rev: Revision) -> TxnOp {
    let key = keys::handle_key(id);
    if h.is_empty() {
        TxnOp::Delete {
            key,
            expected_revision: Some(rev),
        }
    } else {
        TxnOp::Update {
            key,
            value: h.to_json(),
            expected_revision: rev,
            lease: None,
        }
    }
}

fn handle_increment_op(
    id: &str,
    current: Option<Versioned<IpamHandle>>,
    cidr: &IpNet,
    n: u64,
) -> TxnOp {
    match current {
        Some(hv) => {
            let mut h = hv.value;
            h.increment(&cidr_key(cidr), n);
            TxnOp::Update {
                key: keys::handle_key(id),
                value: h.to_json(),
                expected_revision: hv.rev,
                lease: None,
            }
        }
        None => {
            let mut h = IpamHandle::default();
            h.increment(&cidr_key(cidr), n);
            TxnOp::Create {
                key: keys::handle_key(id),
                value: h.to_json(),
                lease: None,
            }
        }
    }
}

/// Names become key path segments: they must be non-empty and free of `/`.
fn validate_name(s: &str) -> Result<(), ()> {
    if s.is_empty() || s.contains('/') {
        Err(())
    } else {
        Ok(())
    }
}

fn parse_cidr_or_ip(s: &str) -> Option<IpNet> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// Reads the fields the allocator needs from a v3 IPPool object.
fn parse_v3_pool(bytes: &[u8]) -> Result<PoolConfig, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let name = v
        .pointer("/metadata/name")
        .and_then(|x| x.as_str())
        .unwrap_or_default();
    let spec = v.get("spec").ok_or("missing spec")?;
    let cidr_text = spec
        .get("cidr")
        .and_then(|x| x.as_str())
        .ok_or("missing spec.cidr")?;
    let cidr: IpNet = cidr_text
        .parse()
        .map_err(|_| format!("spec.cidr {cidr_text:?} is not a cidr"))?;
    let mut p = PoolConfig::new(name, cidr);
    if let Some(bs) = spec
        .get("blockSize")
        .and_then(|x| x.as_u64())
        .filter(|b| *b > 0)
    {
        p.block_size = u8::try_from(bs).map_err(|_| format!("spec.blockSize {bs} out of range"))?;
    }
    if let Some(s) = spec.get("nodeSelector").and_then(|x| x.as_str()) {
        p.node_selector = s.to_string();
    }
    p.disabled = spec
        .get("disabled")
        .and_then(|x| x.as_bool())
        .unwrap_or(false);
    if let Some(uses) = spec.get("allowedUses").and_then(|x| x.as_array()) {
        for u in uses.iter().filter_map(|x| x.as_str()) {
            p.allowed_uses.push(match u {
                "Workload" => AllowedUse::Workload,
                "Tunnel" => AllowedUse::Tunnel,
                "LoadBalancer" => AllowedUse::LoadBalancer,
                other => return Err(format!("spec.allowedUses: unknown use {other:?}")),
            });
        }
    }
    if spec.get("assignmentMode").and_then(|x| x.as_str()) == Some("Manual") {
        p.assignment_mode = AssignmentMode::Manual;
    }
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v3_pool() {
        let raw = br#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3",
            "metadata":{"name":"default-ipv4-ippool"},
            "spec":{"cidr":"10.244.0.0/16","blockSize":24,"nodeSelector":"all()",
                    "allowedUses":["Workload"],"ipipMode":"Always"}}"#;
        let p = parse_v3_pool(raw).unwrap();
        assert_eq!(p.name, "default-ipv4-ippool");
        assert_eq!(p.block_size, 24);
        assert_eq!(p.allowed_uses, vec![AllowedUse::Workload]);
        let bad = br#"{"metadata":{"name":"x"},"spec":{"cidr":"10.0.0.0/16","blockSize":8}}"#;
        assert!(parse_v3_pool(bad).unwrap_err().contains("block size 8"));
    }

    #[test]
    fn partial_fulfillment_message() {
        let a = IpamAssignments {
            ips: vec![],
            num_requested: 1,
            msgs: vec!["no ips".into()],
        };
        assert_eq!(
            a.partial_fulfillment_error(IpVersion::V4).unwrap(),
            "assigned 0 out of 1 requested ipv4 addresses; no ips"
        );
    }
}
