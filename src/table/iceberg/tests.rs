//! The Iceberg log on an in-memory store, through the commit path: a version per entry, any
//! writer writes a missing one, a table turned on late starts from the whole table, a foreign
//! version stops the projection.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;

use super::*;
use crate::table::commit::{Committer, Outcome, Proposal};
use crate::table::entry::{test_file, OffsetRange};

fn schema() -> SchemaDef {
    SchemaDef {
        fingerprint: "fp".into(),
        layout: "date={date}/hour={hour}".into(),
        columns: r#"{"type":"struct","fields":[{"name":"_offset","type":"long","nullable":false,"metadata":{}}]}"#.into(),
        partition_columns: vec![],
        features: vec![],
    }
}

fn settings() -> IcebergSettings {
    IcebergSettings {
        name: "t".into(),
        location: "memory:///t".into(),
        schema: schema(),
        event_time: None,
        window_ms: Some(3_600_000),
        retention: Duration::from_secs(3600),
        max_snapshots: 100,
    }
}

struct Table {
    rt: Arc<tokio::runtime::Runtime>,
    store: TableStore,
}

impl Table {
    fn new() -> Self {
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        );
        let store = TableStore::new(Arc::new(InMemory::new()), Path::from("t"));
        Table { rt, store }
    }

    fn writer(&self, iceberg: bool) -> Committer {
        let m = Manifest::on(self.store.clone(), 1000);
        let c = Committer::open(m, self.rt.clone(), "w".into())
            .unwrap()
            .with_table(schema(), None);
        c.with_iceberg(iceberg.then(|| IcebergLog::new(self.store.clone(), settings())))
    }

    fn publish(&self, c: &Committer, p: i32, from: i64, to: i64) -> Entry {
        let range = OffsetRange {
            records: Some((to - from) as u64),
            ..OffsetRange::new("t", p, from, to)
        };
        let file = test_file(&range, "date=2026-01-01/hour=13");
        let proposals = vec![Proposal {
            range,
            rows: (to - from) as u64,
            dead_letters: 0,
        }];
        let (prepared, refused) = c.prepare(EntryKind::Append, proposals, vec![]).unwrap();
        assert!(refused.is_empty());
        let rows = file.rows;
        let written = prepared
            .write(vec![file], vec![], |_| {
                Ok(crate::table::commit::Encoded::new(b"rows".to_vec(), rows))
            })
            .unwrap();
        match written.publish().unwrap() {
            Outcome::Published { entry, .. } => {
                c.settle(&entry);
                *entry
            }
            o => panic!("{o:?}"),
        }
    }

    fn latest(&self) -> State {
        self.rt.block_on(load_latest(&self.store)).unwrap().unwrap()
    }
}

#[test]
fn every_entry_is_a_version_and_a_late_start_takes_the_whole_table() {
    let t = Table::new();
    // Three entries before Iceberg is turned on.
    let plain = t.writer(false);
    for i in 0..3 {
        t.publish(&plain, 0, i * 10, i * 10 + 10);
    }
    assert!(t.rt.block_on(load_latest(&t.store)).unwrap().is_none());
    let w = t.writer(true);
    let s = t.latest();
    assert_eq!(
        (s.version, s.meta.sluice_entry().map(|e| e.0)),
        (1, Some(3))
    );
    assert_eq!(
        s.meta.current_snapshot().unwrap().summary["total-data-files"],
        "3"
    );
    for i in 3..6 {
        t.publish(&w, 0, i * 10, i * 10 + 10);
    }
    let s = t.latest();
    assert_eq!(
        (s.version, s.meta.sluice_entry().map(|e| e.0)),
        (4, Some(6))
    );
    assert_eq!(
        s.meta.current_snapshot().unwrap().summary["total-records"],
        "60"
    );
    let hint = t.rt.block_on(t.store.get(VERSION_HINT)).unwrap().unwrap();
    assert_eq!(&hint[..], b"4");
    // Another writer's entries are projected by whoever commits next; a second Iceberg writer
    // that finds the versions there goes on from them.
    let other = t.writer(false);
    t.publish(&other, 0, 60, 70);
    let second = t.writer(true);
    assert_eq!(t.latest().meta.sluice_entry().map(|e| e.0), Some(7));
    t.publish(&second, 0, 70, 80);
    t.publish(&w, 0, 80, 90);
    let s = t.latest();
    assert_eq!(
        (s.version, s.meta.sluice_entry().map(|e| e.0)),
        (7, Some(9))
    );
    assert_eq!(
        s.meta.current_snapshot().unwrap().summary["total-records"],
        "90"
    );
}

#[test]
fn a_version_another_engine_wrote_stops_the_projection() {
    let t = Table::new();
    let w = t.writer(true);
    t.publish(&w, 0, 0, 10);
    let mut s = t.latest();
    // An engine's `expire_snapshots` or append: a version whose snapshot names no entry.
    let snap = s.meta.snapshots.last_mut().unwrap();
    snap.summary.remove(metadata::SUMMARY_COMMIT_ID);
    snap.summary.insert("operation".into(), "append".into());
    let body = serde_json::to_vec(&s.meta).unwrap();
    t.rt.block_on(
        t.store
            .put_new(&project::metadata_rel(2), Bytes::from(body)),
    )
    .unwrap();
    let fresh = t.writer(true);
    let e = t.publish(&fresh, 0, 10, 20);
    assert_eq!(e.seq, 2, "loading goes on");
    let err = fresh.iceberg_sync(None).unwrap_err();
    assert!(matches!(err, IcebergError::Stopped(_)), "{err}");
    let log = IcebergLog::new(t.store.clone(), settings());
    let state =
        t.rt.block_on(Manifest::on(t.store.clone(), 1000).load())
            .unwrap();
    let err =
        t.rt.block_on(log.sync(&Manifest::on(t.store.clone(), 1000), &state, None))
            .unwrap_err();
    assert!(
        matches!(err, IcebergError::Foreign { version: 2, .. }),
        "{err}"
    );
}

#[test]
fn data_files_carry_the_field_ids_of_the_iceberg_schema() {
    use arrow::datatypes::{DataType, Field, Fields, Schema};
    let def = SchemaDef {
        columns: r#"{"type":"struct","fields":[
            {"name":"_partition","type":"integer","nullable":false,"metadata":{}},
            {"name":"tags","type":{"type":"array","elementType":"string","containsNull":true},"nullable":true,"metadata":{}},
            {"name":"attrs","type":{"type":"map","keyType":"string","valueType":"long","valueContainsNull":true},"nullable":true,"metadata":{}},
            {"name":"card","type":{"type":"struct","fields":[{"name":"brand","type":"string","nullable":true,"metadata":{}}]},"nullable":true,"metadata":{}}
        ]}"#
        .into(),
        ..schema()
    };
    let (ice, _) = schema::iceberg_schema(&def, &Default::default(), 0).unwrap();
    let ids = schema::IceSchema { json: ice }.ids();
    let entries = Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Int64, true),
        ])),
        false,
    );
    let arrow = Schema::new(vec![
        Field::new("_partition", DataType::Int32, false),
        Field::new_list("tags", Field::new("item", DataType::Utf8, true), true),
        Field::new("attrs", DataType::Map(entries.into(), false), true),
        Field::new(
            "card",
            DataType::Struct(Fields::from(vec![Field::new(
                "brand",
                DataType::Utf8,
                true,
            )])),
            true,
        ),
    ]);
    let with = Arc::new(schema::with_field_ids(&arrow, &ids).unwrap());
    let batch = arrow::array::RecordBatch::new_empty(Arc::new(arrow.clone()));
    let props = parquet::file::properties::WriterProperties::builder().build();
    let body = crate::record::encode::encode(&with, &[batch], &props).unwrap();
    let reader =
        parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(body)).unwrap();
    let mut found = std::collections::BTreeMap::new();
    fn walk(
        t: &parquet::schema::types::Type,
        path: &str,
        out: &mut std::collections::BTreeMap<String, i32>,
    ) {
        let info = t.get_basic_info();
        if info.has_id() {
            out.insert(path.to_string(), info.id());
        }
        if t.is_group() {
            for c in t.get_fields() {
                // Parquet's list and map levels (`list`, `key_value`) are not Iceberg paths.
                let name = match c.name() {
                    "list" | "key_value" => None,
                    "item" => Some("element"),
                    n => Some(n),
                };
                let p = match (path, name) {
                    (p, None) => p.to_string(),
                    ("", Some(n)) => schema::iceberg_name(n),
                    (p, Some(n)) => format!("{p}.{n}"),
                };
                walk(c, &p, out);
            }
        }
    }
    use parquet::file::reader::FileReader;
    walk(reader.metadata().file_metadata().schema(), "", &mut found);
    assert_eq!(found, ids, "every column's field id is its Iceberg id");
    assert!(found.contains_key("_kafka_partition") && found.contains_key("attrs.value"));
    // A column the Iceberg schema does not know yet: the file gets no ids at all.
    let mut more = arrow.fields().to_vec();
    more.push(Arc::new(Field::new("new_col", DataType::Utf8, true)));
    assert!(schema::with_field_ids(&Schema::new(more), &ids).is_none());
}
