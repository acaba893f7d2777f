//! The incremental apply (only objects touched by the messages since the last apply are
//! re-rendered and compared) must leave exactly the table a full rendering gives, for any
//! message sequence; checked over a deterministic pseudo-random sequence.

#![allow(clippy::unwrap_used)]

mod common;

use calico_linux::fake::FakeNft;
use common::*;
use felix_calc::msg::*;
use felix_nft::{ApplyKind, Config, NftDataplane, render};

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn pids() -> Vec<PolicyId> {
    (0..5)
        .map(|i| pid("default", &format!("p{i}"), ""))
        .collect()
}

fn random_msg(g: &mut Lcg) -> ToDataplane {
    let pids = pids();
    match g.next(9) {
        0 | 1 => {
            let mut r = rule("allow");
            r.src_ip_set_ids = vec![format!("s:{}", g.next(4))];
            let mut r2 = rule(if g.next(2) == 0 { "deny" } else { "pass" });
            r2.dst_named_port_ip_set_ids = vec![format!("n:{}", g.next(2))];
            // Negated matches: their IPv6 variants change when IPv6 sets appear or go.
            let mut r3 = rule("deny");
            r3.not_src_ip_set_ids = vec![format!("s:{}", g.next(4))];
            policy(&pids[g.next(5)], vec![r, r2, r3], vec![rule("allow")])
        }
        2 => ToDataplane::ActivePolicyRemove(ActivePolicyRemove {
            id: pids[g.next(5)].clone(),
        }),
        3 => {
            // Now and then an IPv6 member (IPv6 sets exist only while some set has one) or a
            // prefix (the set becomes an interval set under another name).
            let members: Vec<String> = (0..g.next(4))
                .map(|k| match g.next(8) {
                    0 => format!("fd00::1:{k}"),
                    1 => format!("10.2.{k}.0/24"),
                    _ => format!("10.1.{}.{k}", g.next(3)),
                })
                .collect();
            let refs: Vec<&str> = members.iter().map(String::as_str).collect();
            ipset(&format!("s:{}", g.next(4)), IpSetType::Net, &refs)
        }
        4 => ToDataplane::IpSetRemove(IpSetRemove {
            id: format!("s:{}", g.next(4)),
        }),
        5 => profile(&format!("prof{}", g.next(2)), vec![rule("allow")], vec![]),
        6 => ToDataplane::WorkloadEndpointRemove(WorkloadEndpointRemove {
            id: wep_id(&format!("cali{}", g.next(6))),
        }),
        _ => {
            let n = g.next(6);
            let ing: Vec<PolicyId> = (0..g.next(3)).map(|_| pids[g.next(5)].clone()).collect();
            let eg: Vec<PolicyId> = (0..g.next(2)).map(|_| pids[g.next(5)].clone()).collect();
            let tiers = if ing.is_empty() && eg.is_empty() {
                vec![]
            } else {
                vec![tier("default", "Deny", &ing, &eg)]
            };
            let prof = format!("prof{}", g.next(3));
            wep(
                &format!("cali{n}"),
                &[&format!("10.0.0.{}/32", g.next(250))],
                &[&prof],
                tiers,
            )
        }
    }
}

#[tokio::test]
async fn incremental_applies_equal_a_full_rendering() {
    let cfg = Config::default();
    let mut dp = NftDataplane::new(FakeNft::new(), cfg.clone());
    assert_eq!(dp.apply().await.unwrap(), ApplyKind::Full);
    let mut g = Lcg(7);
    let mut incremental = 0;
    let (mut v6_flips, mut had_v6) = (0, false);
    let (mut cidr_changes, mut had_cidr) = (0, 0);
    for step in 0..400 {
        for _ in 0..=g.next(3) {
            dp.on_message(&random_msg(&mut g)).unwrap();
        }
        let kind = dp.apply().await.unwrap();
        assert_ne!(kind, ApplyKind::Full, "step {step}");
        incremental += usize::from(kind == ApplyKind::Incremental);
        let full = render(dp.state(), &cfg).unwrap();
        let v6 = full.sets.keys().any(|n| n.starts_with("s6-"));
        v6_flips += usize::from(v6 != had_v6);
        had_v6 = v6;
        let cidr = full.sets.keys().filter(|n| n.starts_with("c4-")).count();
        cidr_changes += usize::from(cidr != had_cidr);
        had_cidr = cidr;
        assert!(
            dp.applied() == Some(&full),
            "step {step}: incremental table differs from the full rendering\n{}",
            full.diff_script(dp.applied().unwrap()).unwrap_or_default()
        );
    }
    assert!(incremental > 100, "{incremental}");
    assert!(
        v6_flips > 4,
        "IPv6 sets appeared or went only {v6_flips} times"
    );
    assert!(
        cidr_changes > 4,
        "interval sets appeared or went only {cidr_changes} times"
    );
}
