//! Storage faults: the loader runs in-process over an object store that fails or "times out"
//! (the write lands, the answer is an error) a fraction of puts and gets. It must retry, never
//! publish a partial commit, and finish with every event exactly once.

mod common;

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use sluice::load::{Loader, Run};
use sluice::table::manifest::Manifest;

use common::*;

#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn ObjectStore>,
    rng: Mutex<u64>,
    /// Per mille of puts that fail before writing, and that fail after writing.
    put_before: u64,
    put_after: u64,
    get_fail: u64,
    injected: AtomicU64,
}

enum Fault {
    None,
    Before,
    After,
}

impl Faulty {
    fn roll(&self) -> u64 {
        let mut r = self.rng.lock().unwrap();
        *r ^= *r << 13;
        *r ^= *r >> 7;
        *r ^= *r << 17;
        *r % 1000
    }

    fn put_fault(&self) -> Fault {
        let x = self.roll();
        if x < self.put_before {
            Fault::Before
        } else if x < self.put_before + self.put_after {
            Fault::After
        } else {
            Fault::None
        }
    }

    fn err(&self, what: &str) -> object_store::Error {
        self.injected.fetch_add(1, Ordering::Relaxed);
        object_store::Error::Generic {
            store: "faulty",
            source: format!("injected fault: {what}").into(),
        }
    }
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        match self.put_fault() {
            Fault::Before => Err(self.err("put refused")),
            Fault::After => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(self.err("put timed out after landing"))
            }
            Fault::None => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if self.roll() < self.get_fail {
            return Err(self.err("get failed"));
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[test]
fn storage_faults_are_retried_and_never_publish_a_partial_commit() {
    let mut f = Fixture::new("faults", 4);
    f.write_job("table", "[commit]\nmax_rows = 2000\ncheckpoint_every = 3\n");
    f.produce(spec(0, 30_000));
    let job = sluice::config::Job::load(&f.job).unwrap();
    let clean = sluice::open_manifest(&job).unwrap();
    let faulty = Arc::new(Faulty {
        inner: clean.store().object_store().clone(),
        rng: Mutex::new(0x2545_f491),
        put_before: 150,
        put_after: 150,
        get_fail: 150,
        injected: AtomicU64::new(0),
    });
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    // A supervisor's loop: a run that gives up is started again.
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 20, "the loader never finished");
        let root = sluice::open_manifest(&job).unwrap().path("");
        let manifest = Manifest::new(faulty.clone(), root, job.checkpoint_every);
        let shutdown = Arc::new(AtomicBool::new(false));
        let result = Loader::with_manifest(job.clone(), manifest, rt.clone(), shutdown)
            .and_then(|l| l.run(Run::Once));
        if result.is_ok() && committed_rows(&f.state()) == 30_000 {
            break;
        }
    }
    let injected = faulty.injected.load(Ordering::Relaxed);
    eprintln!("{injected} faults injected over {runs} run(s)");
    assert!(injected >= 10, "too few faults injected: {injected}");
    // verify (inside read) checks every listed file exists with its size and row count.
    assert_exactly_once(&f.read(), 30_000, 0);
}
