//! The summary's comparison table: each gateway path beside the peer path it is measured against,
//! with the targets (throughput relative to the peer, and at most 1 ms added to p99 when
//! both are paced at a quarter of the peer's saturation rate).

use crate::{Case, Load, Row, Target, fmt_opt, median, median_of};

/// The latency target: what the gateway may add to the peer's p99 at a quarter of its load.
const P99_BUDGET_MS: f64 = 1.0;

/// `failed`: some run behind the figure lost messages or was refused some (its figures are then
/// those of what did arrive), which the target cannot be met with.
fn verdict(met: Option<bool>, failed: bool) -> &'static str {
    match (met, failed) {
        (Some(_), true) => "**not met** (failed runs)",
        (Some(true), false) => "met",
        (Some(false), false) => "**not met**",
        (None, _) => "-",
    }
}

pub fn print(paths: &[Case], rows: &[Row]) {
    let compared: Vec<(Case, Case, Target)> =
        paths.iter().filter_map(|&path| path.peer().map(|(peer, target)| (path, peer, target))).collect();
    if compared.is_empty() {
        return;
    }
    println!(
        "\nGateway paths against their peers: msgs/s = median at saturation; p99 at a quarter of the peer's \
         median saturation rate, both paths paced at that same rate (the \"quarter-peer\" rows).\n"
    );
    println!(
        "| gateway path | peer path | gateway msgs/s | peer msgs/s | gateway/peer | throughput target | met | \
         quarter-peer load | gateway p99 ms | peer p99 ms | difference ms | p99 target | met |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (path, peer, target) in compared {
        let group = |case: Case, kind: Load| -> Vec<&Row> {
            rows.iter().filter(|row| row.case == case.label() && row.kind == kind && row.received > 0).collect()
        };
        let failed = |case: Case, kind: Load| {
            rows.iter().any(|row| row.case == case.label() && row.kind == kind && !row.ok())
        };
        let saturation = |case: Case| {
            let rates: Vec<f64> = group(case, Load::Saturation).iter().map(|row| row.rate).collect();
            median(&rates)
        };
        let (gateway_rate, peer_rate) = (saturation(path), saturation(peer));
        let ratio = gateway_rate.zip(peer_rate).filter(|&(_, peer)| peer > 0.0).map(|(gateway, peer)| gateway / peer);
        let (throughput_target, throughput_met) = match target {
            Target::AtLeast(share) => (format!("≥ {share:.2}"), ratio.map(|ratio| ratio >= share)),
            Target::Report => ("report".to_owned(), None),
        };
        let peer_quarter = group(peer, Load::PeerQuarter);
        let load = peer_quarter.first().map_or_else(|| "-".to_owned(), |row| row.load.replace("quarter-peer ", ""));
        let gateway_p99 = median_of(&group(path, Load::PeerQuarter), |row| row.p99);
        let peer_p99 = median_of(&peer_quarter, |row| row.p99);
        let difference = gateway_p99.zip(peer_p99).map(|(gateway, peer)| gateway - peer);
        println!(
            "| {} | {} | {} | {} | {} | {throughput_target} | {} | {load} | {} | {} | {} | ≤ +{P99_BUDGET_MS:.0} ms | {} |",
            path.label(),
            if paths.contains(&peer) { peer.label().to_owned() } else { format!("{} (not run)", peer.label()) },
            fmt_opt(gateway_rate, 0),
            fmt_opt(peer_rate, 0),
            fmt_opt(ratio, 2),
            verdict(throughput_met, failed(path, Load::Saturation) || failed(peer, Load::Saturation)),
            fmt_opt(gateway_p99, 3),
            fmt_opt(peer_p99, 3),
            difference.map_or_else(|| "-".to_owned(), |difference| format!("{difference:+.3}")),
            verdict(
                difference.map(|difference| difference <= P99_BUDGET_MS),
                failed(path, Load::PeerQuarter) || failed(peer, Load::PeerQuarter)
            ),
        );
    }
}
