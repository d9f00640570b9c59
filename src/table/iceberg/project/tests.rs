//! The projection alone: snapshots follow entries, removals rewrite the manifests that listed
//! the files, many manifests are merged, old snapshots expire, schemas evolve with new ids.

use super::*;
use crate::table::entry::{test_file, StatsJson};
use crate::table::iceberg::avro::FieldSummary;

const H: i64 = 3_600_000;

fn def(extra: &[&str]) -> SchemaDef {
    let mut fields = vec![
        serde_json::json!({"name": "event_id", "type": "string", "nullable": false, "metadata": {}}),
        serde_json::json!({"name": "ts", "type": "timestamp", "nullable": false, "metadata": {}}),
        serde_json::json!({"name": "_offset", "type": "long", "nullable": false, "metadata": {}}),
    ];
    for name in extra {
        fields.push(
            serde_json::json!({"name": name, "type": "long", "nullable": true, "metadata": {}}),
        );
    }
    fields.push(
        serde_json::json!({"name": "date", "type": "date", "nullable": true, "metadata": {}}),
    );
    SchemaDef {
        fingerprint: format!("fp{}", extra.len()),
        layout: "date={date}".into(),
        columns: serde_json::json!({"type": "struct", "fields": fields}).to_string(),
        partition_columns: vec!["date".into()],
        features: vec![],
    }
}

fn ctx(window_ms: i64) -> Ctx {
    Ctx {
        location: "/lake/t".into(),
        table_uuid: table_uuid("first"),
        name: "t".into(),
        fallback: def(&[]),
        event_time: Some("ts".into()),
        window_ms: Some(window_ms),
        retention_ms: 10 * H,
        max_snapshots: 1000,
    }
}

fn file(p: i32, from: i64, to: i64, hour: i64) -> DataFile {
    let r = OffsetRange::new("t", p, from, to);
    let mut f = test_file(&r, &format!("date=1970-01-01/hour={hour}"));
    f.window_start_ms = hour * H;
    f.window_end_ms = (hour + 1) * H;
    f.bytes = 10;
    let stats = FileStats {
        min: [("_offset".to_string(), serde_json::json!(from))].into(),
        max: [("_offset".to_string(), serde_json::json!(to - 1))].into(),
        nulls: [("_offset".to_string(), 0)].into(),
    };
    f.stats = Some(StatsJson::try_from(stats).unwrap());
    f
}

struct Run {
    ctx: Ctx,
    state: Option<State>,
    seq: u64,
}

impl Run {
    fn new(window_ms: i64) -> Self {
        Run {
            ctx: ctx(window_ms),
            state: None,
            seq: 0,
        }
    }

    fn apply(&mut self, kind: EntryKind, added: &[DataFile], removed: &[String]) -> Projected {
        self.seq += 1;
        let id = format!("c{}", self.seq);
        let c = Change {
            seq: self.seq,
            commit_id: &id,
            kind,
            at_ms: self.seq as i64 * 1000,
            added,
            removed,
            ranges: &[],
            schema: None,
        };
        let mut prev = self.state.clone();
        if let Some(p) = prev.as_mut() {
            // What the log reads from storage: here, the entries the last projection kept.
            for m in needs_contents(Some(&self.state.clone().unwrap()), &c) {
                assert!(p.contents.contains_key(&m.path), "{} not cached", m.path);
            }
        }
        let out = project(prev.as_ref(), &c, &self.ctx, "u").unwrap();
        self.state = Some(out.state.clone());
        out
    }

    fn live(&self) -> BTreeSet<String> {
        let s = self.state.as_ref().unwrap();
        s.manifests
            .iter()
            .flat_map(|m| s.contents[&m.path].iter().filter(|e| e.status != DELETED))
            .map(|e| e.file.path.clone())
            .collect()
    }
}

#[test]
fn snapshots_follow_entries_and_removals_rewrite_their_manifests() {
    let mut run = Run::new(H);
    let a = file(0, 0, 10, 5);
    let b = file(1, 0, 20, 6);
    let out = run.apply(EntryKind::Append, &[a.clone(), b.clone()], &[]);
    let meta: TableMetadata = serde_json::from_slice(&out.metadata).unwrap();
    assert_eq!(meta.format_version, 2);
    assert_eq!(meta.last_sequence_number, 1);
    assert_eq!(
        meta.current_snapshot().unwrap().summary["operation"],
        "append"
    );
    assert_eq!(
        meta.current_snapshot().unwrap().summary["total-records"],
        "30"
    );
    assert_eq!(meta.sluice_entry(), Some((1, "c1")));
    // The window is an hour: the spec is the layout's `date` folder (identity), then hour(ts).
    assert_eq!(meta.default_spec_id, 1);
    assert_eq!(
        meta.partition_specs[1]["fields"][0]["transform"],
        "identity"
    );
    assert_eq!(meta.partition_specs[1]["fields"][1]["transform"], "hour");
    let names: Vec<_> = meta.current_schema().unwrap()["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["event_id", "ts", "_offset", "date"]);
    let s = run.state.clone().unwrap();
    assert_eq!(s.manifests.len(), 1);
    let entries = &s.contents[&s.manifests[0].path];
    assert_eq!(
        entries[0].file.partition,
        vec![Some(PartValue::Date(0)), Some(PartValue::Int(5))]
    );
    assert_eq!(
        entries[0].file.path,
        "/lake/t/date=1970-01-01/hour=5/".to_string() + a.path.rsplit('/').next().unwrap()
    );
    assert_eq!(
        entries[0].file.lower,
        vec![(3, 0i64.to_le_bytes().to_vec())]
    );
    let bytes = |v: i32| Some(v.to_le_bytes().to_vec());
    assert_eq!(
        s.manifests[0].partitions,
        vec![
            FieldSummary {
                contains_null: false,
                lower: bytes(0),
                upper: bytes(0)
            },
            FieldSummary {
                contains_null: false,
                lower: bytes(5),
                upper: bytes(6)
            },
        ]
    );

    let c = file(0, 10, 15, 5);
    run.apply(EntryKind::Append, std::slice::from_ref(&c), &[]);
    assert_eq!(run.state.as_ref().unwrap().manifests.len(), 2);
    // A replace of `a`: the first manifest is rewritten, `a` deleted, `b` existing.
    let a2 = file(0, 0, 10, 5);
    let out = run.apply(
        EntryKind::Replace,
        std::slice::from_ref(&a2),
        std::slice::from_ref(&a.path),
    );
    let meta: TableMetadata = serde_json::from_slice(&out.metadata).unwrap();
    let snap = meta.current_snapshot().unwrap();
    assert_eq!(snap.summary["operation"], "overwrite");
    assert_eq!(snap.summary["deleted-data-files"], "1");
    assert_eq!(snap.summary["total-records"], "35");
    let abs = |f: &DataFile| format!("/lake/t/{}", f.path);
    assert_eq!(
        run.live(),
        [abs(&b), abs(&c), abs(&a2)].into_iter().collect()
    );
    let s = run.state.clone().unwrap();
    let rewritten = s.manifests.iter().find(|m| m.deleted_files == 1).unwrap();
    assert_eq!((rewritten.existing_files, rewritten.min_seq), (1, 1));
    // The next snapshot drops nothing and carries every manifest; removing a file no manifest
    // lists is an error.
    let err = project(
        run.state.as_ref(),
        &Change {
            seq: 9,
            commit_id: "x",
            kind: EntryKind::Replace,
            at_ms: 9,
            added: &[],
            removed: std::slice::from_ref(&a.path),
            ranges: &[],
            schema: None,
        },
        &run.ctx,
        "u",
    );
    assert!(matches!(err, Err(ProjectError::NotLive { .. })), "{err:?}");
}

#[test]
fn manifests_merge_past_the_limit_and_snapshots_expire() {
    let mut run = Run {
        ctx: Ctx {
            max_snapshots: 50,
            ..ctx(H)
        },
        state: None,
        seq: 0,
    };
    let mut all = BTreeSet::new();
    for i in 0..250 {
        let f = file(0, i * 10, i * 10 + 10, 5);
        all.insert(format!("/lake/t/{}", f.path));
        run.apply(EntryKind::Append, &[f], &[]);
        let s = run.state.as_ref().unwrap();
        assert!(
            s.manifests.len() <= MERGE_AT,
            "{} manifests",
            s.manifests.len()
        );
        assert!(s.meta.snapshots.len() <= 50);
    }
    assert_eq!(run.live(), all);
    let s = run.state.as_ref().unwrap();
    let live: i64 = s.manifests.iter().map(|m| m.live_files()).sum();
    assert_eq!(live, 250);
    assert_eq!(
        s.meta.current_snapshot().unwrap().summary["total-data-files"],
        "250"
    );
    assert_eq!(s.meta.snapshot_log.len(), s.meta.snapshots.len());
    // A 6-hour window partitions by day; a 2-day window not at all.
    let mut six = Run::new(6 * H);
    six.apply(EntryKind::Append, &[file(0, 0, 1, 5)], &[]);
    let s = six.state.unwrap();
    assert_eq!(s.meta.partition_specs[1]["fields"][1]["transform"], "day");
    let mut long = Run::new(48 * H);
    long.apply(EntryKind::Append, &[file(0, 0, 1, 5)], &[]);
    let meta = long.state.unwrap().meta;
    let spec = &meta.partition_specs[meta.default_spec_id as usize]["fields"];
    assert_eq!(
        spec.as_array().unwrap().len(),
        1,
        "the folder alone: {spec}"
    );
    // A file whose window has two hours takes the folders' spec.
    let mut two = Run::new(H);
    let mut f = file(0, 0, 1, 5);
    f.window_end_ms += H;
    two.apply(EntryKind::Append, &[f], &[]);
    let s = two.state.unwrap();
    assert_eq!(s.manifests[0].spec_id, 2);
    assert_eq!(
        s.contents[&s.manifests[0].path][0].file.partition,
        vec![Some(PartValue::Date(0))]
    );
}

#[test]
fn a_schema_change_adds_a_schema_with_new_ids() {
    let mut run = Run::new(H);
    run.apply(EntryKind::Append, &[file(0, 0, 1, 5)], &[]);
    let wider = def(&["amount"]);
    let c = Change {
        seq: 2,
        commit_id: "c2",
        kind: EntryKind::Append,
        at_ms: 2000,
        added: &[],
        removed: &[],
        ranges: &[],
        schema: Some(&wider),
    };
    let out = project(run.state.as_ref(), &c, &run.ctx, "u").unwrap();
    let meta = out.state.meta;
    assert_eq!(meta.schemas.len(), 2);
    assert_eq!(meta.current_schema_id, 1);
    // event_id, ts, _offset, date took 1..=4; amount, new, takes 5.
    assert_eq!(meta.last_column_id, 5);
    assert_eq!(
        meta.current_schema().unwrap()["fields"][3]["name"],
        "amount"
    );
    assert_eq!(meta.current_schema().unwrap()["fields"][3]["id"], 5);
    assert_eq!(meta.current_schema().unwrap()["fields"][4]["id"], 4);
    assert!(meta.properties["schema.name-mapping.default"].contains("\"amount\""));
}
