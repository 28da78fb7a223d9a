use leakscope_profile::diagnose::evidence::Evidence;
use leakscope_profile::frames::FrameTable;
use leakscope_profile::snapshot::SnapshotReport;
use leakscope_profile::StackView;

#[test]
#[ignore]
fn scratch() {
    let dir = std::env::var("DIR").unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    let mut profiles = Vec::new();
    let mut snaps = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".pb.gz") {
            let b = std::fs::read(&f).unwrap();
            profiles.push(StackView::new(&leakscope_profile::decode(&b).unwrap()));
        } else if name.ends_with(".json") && name.starts_with("snapshot") {
            snaps.push(SnapshotReport::from_json(&std::fs::read_to_string(&f).unwrap()).unwrap());
        }
    }
    let t = FrameTable::builtin();
    let ev = Evidence::build(&snaps, &profiles, &t);
    println!("requests {:?} server {:?} client {:?}", ev.requests, ev.server_connections, ev.client_connections);
    for s in ev.stacks.iter().take(12) {
        println!("STACK {:?} {} role={:?} side={:?} app_leaf={} caller={:?} objs {}->{} avg {}", s.trend.state, s.trend.name, s.facts.role, s.facts.side, s.facts.app_leaf(), s.frame(s.facts.caller), s.objects_first, s.objects_last, s.average_live());
    }
    if let Some(sn) = &ev.snapshots {
        for r in sn.roots.iter().take(8) {
            println!("ROOT {} {:?} {:?} {:?}->{:?} main={:?}", r.label, r.kind, r.trend.state, r.first, r.last, r.main().map(|m| (&m.site[..m.site.len().min(2)], m.amount, m.facts.app_leaf(), m.facts.side)));
        }
        for s in sn.sites.iter().filter(|s| s.facts.role.is_some()).take(15) {
            println!("SITE {:?} {:?}->{:?} caller={:?} between={:?} {}", s.facts.role, s.first, s.last, s.facts.caller.map(|i| &s.site[i]), s.facts.between, s.site.iter().take(3).cloned().collect::<Vec<_>>().join(" < "));
        }
    }
}
