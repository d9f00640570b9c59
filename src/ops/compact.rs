//! `sluice compact`: a window's small files merged into files of about the target size, in one
//! `compact` entry that removes them and adds the new ones, each new file recording the
//! lineage (`spans`) of every row it holds.
//!
//! ```text
//! plan(state, options)          pure: per window (and schema), the live files worth merging,
//!   └► Vec<WindowPlan>            packed into outputs of about the target size
//! compact(committer, plan, …)   per window: prepare (the files still live) → write (read the
//!   └► Vec<Compacted>             inputs, sort, encode, upload) → publish one `compact` entry
//! ```
//!
//! A compaction changes no partition's offsets, so it never conflicts with a loader: only with
//! another compaction or a replace that removed one of its files first (then its entry is
//! refused, its new files are deleted, and the window is left to the next run).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::error::ArrowError;
use parquet::file::properties::WriterProperties;

use crate::config::{EventTime, Job};
use crate::error::{LoadError, Result};
use crate::record::encode;
use crate::record::schema::{KAFKA_TS_COL, OFFSET_COL, PARTITION_COL, TOPIC_COL};
use crate::table::commit::{CommitError, Committer, Outcome};
use crate::table::entry::{DataFile, EntryKind, Span};
use crate::table::files::{read_files, summarized};
use crate::table::manifest::Manifest;
use crate::table::state::{Refusal, TableState};
use crate::table::upload::encode_data_file;

/// What to compact, and into what.
#[derive(Debug, Clone)]
pub struct Options {
    /// Output files of about this many bytes.
    pub target_bytes: u64,
    /// Only the window starting here (ms since the epoch).
    pub window: Option<i64>,
    /// Only windows that ended before this (ms since the epoch): closed ones.
    pub ended_before: Option<i64>,
    /// A window is compacted when it has at least this many small files.
    pub min_files: usize,
}

impl Options {
    /// The job's settings: every window, closed or not.
    pub fn of(job: &Job) -> Options {
        Options {
            target_bytes: job.compaction.target_bytes,
            window: None,
            ended_before: None,
            min_files: job.compaction.min_files,
        }
    }
}

impl SortBy {
    /// The job's order: `compaction.sort_by`, or the event time.
    pub fn of(job: &Job) -> SortBy {
        match &job.compaction.sort_by {
            Some(cols) => SortBy::Columns(cols.clone()),
            None => SortBy::EventTime(job.event_time.clone()),
        }
    }
}

/// A committer on the job's table for a writer that loads no offsets (`role` names it in the
/// entries), keeping the Delta log in step.
pub fn committer(
    job: &Job,
    manifest: Manifest,
    rt: Arc<tokio::runtime::Runtime>,
    role: &str,
) -> Result<Committer> {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let writer = format!("{host}/{}/{role}", std::process::id());
    let delta = crate::open_delta(job, &manifest)?;
    let iceberg = crate::open_iceberg(job, &manifest)?;
    Ok(Committer::open(manifest, rt, writer)?
        .with_table(crate::schema_def(job)?, delta)
        .with_iceberg(iceberg))
}

/// The background compaction of a continuous loader: each call compacts the windows closed
/// through its argument (one `compact` entry per window) and counts what it did in `metrics`;
/// a failure is logged (the next closing tries again).
pub fn in_background(
    job: Job,
    manifest: Manifest,
    rt: Arc<tokio::runtime::Runtime>,
    metrics: Arc<crate::load::metrics::Metrics>,
) -> crate::load::CompactClosed {
    let props = encode::writer_properties(job.compression, job.row_group_rows);
    Arc::new(move |closed_ms: i64| {
        let run = || -> Result<Vec<Compacted>> {
            let c = committer(&job, manifest.clone(), rt.clone(), "compact")?;
            let options = Options {
                ended_before: Some(closed_ms),
                ..Options::of(&job)
            };
            let plans = plan(&c.snapshot(), &options);
            compact(&c, &plans, &SortBy::of(&job), &props)
        };
        match run() {
            Ok(done) => {
                for d in done.iter().filter(|d| d.seq.is_some()) {
                    metrics.compactions.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .compacted_files
                        .fetch_add(d.files_removed as u64, Ordering::Relaxed);
                }
                for d in done.iter().filter(|d| d.refused.is_some()) {
                    tracing::info!(window_start_ms = d.window_start_ms, refused = ?d.refused, "window not compacted (another writer took its files first); the next closing tries again");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "background compaction failed; the next closing tries again")
            }
        }
    })
}

/// A file counts as small below this share of the target size. Outputs are packed up to the
/// target in input bytes and come out smaller (many small files compress worse than one), so
/// they land above this share and a second run leaves them alone: compaction converges.
const SMALL_SHARE: f64 = 0.5;

/// One window's compaction: its small files, packed into outputs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WindowPlan {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub schema_fingerprint: String,
    /// Each output's input files, in event-time order.
    pub outputs: Vec<Vec<DataFile>>,
}

impl WindowPlan {
    pub fn inputs(&self) -> impl Iterator<Item = &DataFile> {
        self.outputs.iter().flatten()
    }
}

/// Pure: the windows worth compacting in `state`, each with its outputs. Files of one window
/// and one schema are merged (across partitions); a file already near the target size stays
/// as it is; an output of a single file is no output. Inputs are packed up to the target by
/// their rows times those files' bytes per row once the table has full compacted files of the
/// schema, else times the bytes a row adds to the inputs (what they will weigh merged).
pub fn plan(state: &TableState, o: &Options) -> Vec<WindowPlan> {
    let small = (o.target_bytes as f64 * SMALL_SHARE) as u64;
    let mut windows: BTreeMap<(i64, &str, &str), Vec<&DataFile>> = BTreeMap::new();
    for f in &state.files {
        let wanted = o.window.is_none_or(|w| w == f.window_start_ms)
            && o.ended_before.is_none_or(|t| f.window_end_ms <= t);
        if wanted && f.bytes < small {
            let dir = f.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            windows
                .entry((f.window_start_ms, f.schema_fingerprint.as_str(), dir))
                .or_default()
                .push(f);
        }
    }
    // Merged rows compress better than small files: where the table has full compacted
    // files of a schema, their bytes per row estimate what an output will weigh.
    let mut full: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for f in state
        .files
        .iter()
        .filter(|f| !f.spans.is_empty() && f.bytes >= small)
    {
        let e = full.entry(f.schema_fingerprint.as_str()).or_default();
        e.0 += f.bytes;
        e.1 += f.rows;
    }
    let mut out = Vec::new();
    for ((start, fingerprint, _), mut files) in windows {
        if files.len() < o.min_files.max(2) {
            continue;
        }
        let per_row = full
            .get(fingerprint)
            .filter(|(_, rows)| *rows > 0)
            .map(|&(bytes, rows)| bytes as f64 / rows as f64)
            .or_else(|| bytes_per_row_merged(&files));
        // What a file will weigh in an output: by the compacted files' bytes per row when
        // known, else by what a row adds to the inputs (never more than the file itself).
        let weight = |f: &DataFile| match per_row {
            Some(b) => ((f.rows as f64 * b) as u64).min(f.bytes),
            None => f.bytes,
        };
        files.sort_by(|a, b| (a.min_event_ms, &a.path).cmp(&(b.min_event_ms, &b.path)));
        let mut outputs: Vec<Vec<DataFile>> = vec![Vec::new()];
        let mut bytes = 0u64;
        for f in files {
            let w = weight(f);
            if bytes > 0 && bytes + w > o.target_bytes {
                outputs.push(Vec::new());
                bytes = 0;
            }
            bytes += w;
            if let Some(last) = outputs.last_mut() {
                last.push(f.clone());
            }
        }
        outputs.retain(|inputs| inputs.len() >= 2);
        if let Some(first) = outputs.first().and_then(|o| o.first()) {
            out.push(WindowPlan {
                window_start_ms: start,
                window_end_ms: first.window_end_ms,
                schema_fingerprint: fingerprint.to_string(),
                outputs,
            });
        }
    }
    out
}

/// What a row will weigh in a merged file, before the table has compacted files to tell:
/// the bytes a row adds to an input, fitted over the inputs (bytes = per-file overhead + rows ×
/// per-row bytes, least squares), so that small files' footers and column set-ups, which a merge
/// drops, are not counted; at most the densest input's bytes per row. `None` when the inputs
/// cannot tell (all of one row count).
fn bytes_per_row_merged(files: &[&DataFile]) -> Option<f64> {
    let n = files.len() as f64;
    let (sx, sy) = files.iter().fold((0.0, 0.0), |(x, y), f| {
        (x + f.rows as f64, y + f.bytes as f64)
    });
    let (mx, my) = (sx / n, sy / n);
    let (cov, var) = files.iter().fold((0.0, 0.0), |(c, v), f| {
        let dx = f.rows as f64 - mx;
        (c + dx * (f.bytes as f64 - my), v + dx * dx)
    });
    let densest = files
        .iter()
        .filter(|f| f.rows > 0)
        .map(|f| f.bytes as f64 / f.rows as f64)
        .fold(f64::INFINITY, f64::min);
    let per_row = cov / var;
    (var > 0.0 && per_row.is_finite() && per_row > 0.0).then(|| per_row.min(densest))
}

/// How rows are ordered in a compacted file.
#[derive(Debug, Clone)]
pub enum SortBy {
    /// By event time, then topic, partition and offset.
    EventTime(EventTime),
    /// By these columns, in order, then topic, partition and offset.
    Columns(Vec<String>),
}

/// What one window's compaction did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Compacted {
    pub window_start_ms: i64,
    pub seq: Option<u64>,
    pub files_removed: usize,
    pub files_added: usize,
    pub bytes_removed: u64,
    pub bytes_added: u64,
    pub rows: u64,
    /// Why nothing was published (another compaction or a replace took a file first).
    pub refused: Option<String>,
}

/// Compacts each planned window in its own entry, one after the other.
pub fn compact(
    c: &Committer,
    plans: &[WindowPlan],
    sort: &SortBy,
    props: &WriterProperties,
) -> Result<Vec<Compacted>> {
    plans
        .iter()
        .map(|p| compact_window(c, p, sort, props))
        .collect()
}

fn compact_window(
    c: &Committer,
    plan: &WindowPlan,
    sort: &SortBy,
    props: &WriterProperties,
) -> Result<Compacted> {
    let removed: Vec<String> = plan.inputs().map(|f| f.path.clone()).collect();
    let mut done = Compacted {
        window_start_ms: plan.window_start_ms,
        seq: None,
        files_removed: removed.len(),
        files_added: plan.outputs.len(),
        bytes_removed: plan.inputs().map(|f| f.bytes).sum(),
        bytes_added: 0,
        rows: plan.inputs().map(|f| f.rows).sum(),
        refused: None,
    };
    let (prepared, refused) = c.prepare(EntryKind::Compact, Vec::new(), removed)?;
    if !refused.is_empty() {
        done.refused = Some(describe(&refused));
        return Ok(done);
    }
    let files: Vec<DataFile> = plan
        .outputs
        .iter()
        .map(|inputs| merged_file(inputs))
        .collect();
    let store = c.manifest().store().clone();
    let rt = c.runtime();
    let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    let ids = c.field_ids();
    let written = prepared.write(files, Vec::new(), |i| {
        let inputs = &plan.outputs[i];
        let failed = |source: LoadError| CommitError::Encode {
            path: paths[i].clone(),
            source: Box::new(source),
        };
        let batches = rt.block_on(read_files(&store, inputs)).map_err(failed)?;
        let batch = sorted(&batches, sort).map_err(|source| {
            failed(LoadError::Arrow {
                context: format!("sorting the rows of {} files", inputs.len()),
                source,
            })
        })?;
        encode_data_file(&batch.schema(), &[batch], props, &paths[i], ids.as_ref())
    })?;
    match written.publish()? {
        Outcome::Published { entry, .. } => {
            c.settle(&entry);
            done.seq = Some(entry.seq);
            done.bytes_added = entry.files.iter().map(|f| f.bytes).sum();
            tracing::info!(
                seq = entry.seq,
                window_start_ms = plan.window_start_ms,
                files_removed = done.files_removed,
                files_added = done.files_added,
                rows = done.rows,
                "compacted"
            );
        }
        Outcome::Refused { refused, .. } => done.refused = Some(describe(&refused)),
    }
    Ok(done)
}

fn describe(refused: &[Refusal]) -> String {
    refused
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The description of the file that merges `inputs` (one window, one schema): its lineage is
/// theirs, span for span.
pub fn merged_file(inputs: &[DataFile]) -> DataFile {
    let spans: Vec<Span> = inputs
        .iter()
        .flat_map(|f| f.lineage().into_owned())
        .collect();
    let first = &inputs[0];
    let dir = first.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    summarized(DataFile {
        path: format!(
            "{dir}/part-compact-{}.parquet",
            uuid::Uuid::new_v4().simple()
        ),
        bytes: 0,
        rows: inputs.iter().map(|f| f.rows).sum(),
        topic: String::new(),
        partition: -1,
        first_offset: 0,
        next_offset: 0,
        window_start_ms: first.window_start_ms,
        window_end_ms: first.window_end_ms,
        min_event_ms: inputs.iter().map(|f| f.min_event_ms).min().unwrap_or(0),
        max_event_ms: inputs.iter().map(|f| f.max_event_ms).max().unwrap_or(0),
        schema_fingerprint: first.schema_fingerprint.clone(),
        stats: None,
        spans,
        late: false,
    })
}

/// The rows of `batches` as one batch, in `sort` order (ties by topic, partition, offset).
pub fn sorted(
    batches: &[RecordBatch],
    sort: &SortBy,
) -> std::result::Result<RecordBatch, ArrowError> {
    let Some(first) = batches.first() else {
        return Err(ArrowError::InvalidArgumentError("no rows to sort".into()));
    };
    // Files of one schema written by different versions may differ in a nested field's name
    // (a map's entries): each is cast to the first's types.
    let schema = first.schema();
    let aligned = batches
        .iter()
        .map(|b| {
            if b.schema() == schema {
                return Ok(b.clone());
            }
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<std::result::Result<Vec<_>, ArrowError>>()?;
    let batch = concat_batches(&schema, &aligned)?;
    let column = |name: &str| -> std::result::Result<ArrayRef, ArrowError> {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| ArrowError::SchemaError(format!("no column `{name}` to sort by")))
    };
    let mut keys: Vec<ArrayRef> = Vec::new();
    match sort {
        SortBy::EventTime(EventTime::KafkaTimestamp) => keys.push(column(KAFKA_TS_COL)?),
        SortBy::EventTime(EventTime::Field { name, format }) => {
            let ms = crate::record::event_time::to_millis(&column(name)?, *format)?;
            keys.push(Arc::new(ms));
        }
        SortBy::Columns(names) => {
            for n in names {
                keys.push(column(n)?);
            }
        }
    }
    for n in [TOPIC_COL, PARTITION_COL, OFFSET_COL] {
        keys.push(column(n)?);
    }
    let keys: Vec<SortColumn> = keys
        .into_iter()
        .map(|values| SortColumn {
            values,
            options: None,
        })
        .collect();
    let order = lexsort_to_indices(&keys, None)?;
    take_record_batch(&batch, &order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::entry::{test_entry, test_file};

    fn state_with(files: Vec<DataFile>) -> TableState {
        let mut s = TableState::default();
        let mut e = test_entry(&[("t", 0, 0, 1000), ("t", 1, 0, 1000)]);
        e.seq = 1;
        e.files = files;
        s.apply(&e).unwrap();
        s
    }

    fn small(p: i32, from: i64, to: i64, bytes: u64, window: i64) -> DataFile {
        let mut f = test_file(
            &crate::table::entry::OffsetRange::new("t", p, from, to),
            &format!("w={window}"),
        );
        f.bytes = bytes;
        f.window_start_ms = window;
        f.window_end_ms = window + 10;
        f.min_event_ms = from;
        f
    }

    #[test]
    fn plans_windows_of_small_files_into_outputs_near_the_target() {
        let mut files = Vec::new();
        for i in 0..10 {
            files.push(small(i % 2, i as i64 * 10, i as i64 * 10 + 10, 30, 0));
        }
        files.push(small(0, 500, 510, 90, 0)); // big enough already
        files.push(small(0, 600, 610, 30, 100)); // alone in its window
        let s = state_with(files);
        let o = Options {
            target_bytes: 100,
            window: None,
            ended_before: None,
            min_files: 2,
        };
        let plans = plan(&s, &o);
        assert_eq!(plans.len(), 1);
        let p = &plans[0];
        assert_eq!(p.window_start_ms, 0);
        // 10 files of 30 bytes: outputs of 3, 3, 3 (and a lone last one left as it is).
        let sizes: Vec<usize> = p.outputs.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 3, 3]);
        // Lineage: an output's spans are its inputs', across partitions.
        let f = merged_file(&p.outputs[0]);
        assert_eq!(f.spans.len(), 3);
        assert_eq!(f.partition, -1);
        assert_eq!(f.rows, 30);
        assert_eq!(
            plan(
                &s,
                &Options {
                    window: Some(100),
                    ..o.clone()
                }
            )
            .len(),
            0
        );
        assert_eq!(
            plan(
                &s,
                &Options {
                    ended_before: Some(5),
                    ..o
                }
            )
            .len(),
            0
        );
    }

    #[test]
    fn once_the_table_has_full_compacted_files_inputs_are_packed_by_what_they_will_weigh() {
        // 10 files of 30 bytes and 100 rows each; the table's compacted files hold 100 rows in
        // 20 bytes (merged rows compress better): 5 inputs make an output of ~100 bytes.
        let mut files: Vec<DataFile> = (0..10)
            .map(|i| {
                let mut f = small(0, i * 100, i * 100 + 100, 30, 0);
                f.rows = 100;
                f
            })
            .collect();
        let mut full = merged_file(&[small(1, 0, 500, 60, 500), small(1, 500, 1000, 60, 500)]);
        (full.bytes, full.rows, full.window_start_ms) = (100, 500, 500);
        let o = Options {
            target_bytes: 100,
            window: Some(0),
            ended_before: None,
            min_files: 2,
        };
        let sizes = |s: &TableState| -> Vec<usize> {
            plan(s, &o)[0].outputs.iter().map(Vec::len).collect()
        };
        assert_eq!(sizes(&state_with(files.clone())), vec![3, 3, 3]);
        files.push(full);
        assert_eq!(sizes(&state_with(files)), vec![5, 5]);
    }
}
