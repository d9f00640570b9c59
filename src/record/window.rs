//! Event-time windows: pure functions of an event time, no IO, no clock.
//!
//! A window is a half-open UTC interval `[start, start + size)` aligned on multiples of `size`
//! since the Unix epoch. Sizes that divide a day align on UTC midnight.

use crate::error::{invalid, Invalid};
use chrono::{DateTime, Datelike, Timelike, Utc};

/// A validated window size in milliseconds (> 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize(i64);

impl WindowSize {
    pub fn from_millis(ms: i64) -> Option<Self> {
        (ms > 0).then_some(Self(ms))
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// The start of the window holding `event_ms` (floor division, also for times before 1970).
    #[inline]
    pub fn start_of(self, event_ms: i64) -> i64 {
        event_ms.div_euclid(self.0) * self.0
    }
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// How a window start turns into a Hive-style path such as `date=2026-11-24/hour=13`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    template: String,
}

/// Placeholders a layout may use.
pub const PLACEHOLDERS: [&str; 6] = ["{date}", "{year}", "{month}", "{day}", "{hour}", "{minute}"];

impl Layout {
    /// The layout that fits a window size: `date=` for days, `/hour=` below a day, `/minute=`
    /// below an hour.
    pub fn default_for(size: WindowSize) -> Self {
        let template = if size.millis() % DAY == 0 {
            "date={date}"
        } else if size.millis() % HOUR == 0 {
            "date={date}/hour={hour}"
        } else {
            "date={date}/hour={hour}/minute={minute}"
        };
        Self {
            template: template.to_string(),
        }
    }

    /// Checks that the template only uses known placeholders, stays relative, and tells apart
    /// every window of `size` (a 15-minute window needs `{minute}`).
    pub fn parse(template: &str, size: WindowSize) -> Result<Self, Invalid> {
        let t = template.trim_matches('/');
        if t.is_empty() {
            return Err("layout must not be empty".into());
        }
        let mut rest = t.to_string();
        for p in PLACEHOLDERS {
            rest = rest.replace(p, "");
        }
        if rest.contains('{') || rest.contains('}') {
            return Err(invalid!(
                "unknown placeholder in `{template}`; known: {}",
                PLACEHOLDERS.join(", ")
            ));
        }
        if t.split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
            || t.contains('\\')
        {
            return Err(invalid!(
                "`{template}` must be relative path segments without `.`/`..`"
            ));
        }
        let has = |p: &str| t.contains(p);
        let has_day = has("{date}") || (has("{year}") && has("{month}") && has("{day}"));
        let ms = size.millis();
        let needs_minute = ms % HOUR != 0;
        let needs_hour = ms % DAY != 0;
        if !has_day {
            return Err(invalid!(
                "`{template}` must contain {{date}} (or {{year}}, {{month}} and {{day}})"
            ));
        }
        if needs_hour && !has("{hour}") {
            return Err(invalid!(
                "`{template}` needs {{hour}}: windows are shorter than a day"
            ));
        }
        if needs_minute && !has("{minute}") {
            return Err(invalid!(
                "`{template}` needs {{minute}}: windows are shorter than an hour"
            ));
        }
        Ok(Self {
            template: t.to_string(),
        })
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    /// The path of the window starting at `start_ms` (no leading or trailing slash).
    /// The folder of the window starting at `start_ms`; `None` outside the calendar chrono
    /// knows (never a made-up 1970 folder).
    pub fn path(&self, start_ms: i64) -> Option<String> {
        let t = DateTime::<Utc>::from_timestamp_millis(start_ms)?;
        let mut out = self.template.clone();
        let subs = [
            ("{date}", t.format("%Y-%m-%d").to_string()),
            ("{year}", format!("{:04}", t.year())),
            ("{month}", format!("{:02}", t.month())),
            ("{day}", format!("{:02}", t.day())),
            ("{hour}", format!("{:02}", t.hour())),
            ("{minute}", format!("{:02}", t.minute())),
        ];
        for (k, v) in subs {
            if out.contains(k) {
                out = out.replace(k, &v);
            }
        }
        Some(out)
    }
}

/// Groups row indices by window: returns `(window_start, rows)` in order of window start, each
/// row list in input order. Every input index appears exactly once.
pub fn group_by_window(size: WindowSize, event_ms: &[i64]) -> Vec<(i64, Vec<u32>)> {
    let Some(&first) = event_ms.first() else {
        return Vec::new();
    };
    let w0 = size.start_of(first);
    // Fast path: the common case of a batch falling in one window.
    if event_ms.iter().all(|&t| size.start_of(t) == w0) {
        return vec![(w0, (0..event_ms.len() as u32).collect())];
    }
    let mut groups: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
    for (i, &t) in event_ms.iter().enumerate() {
        groups.entry(size.start_of(t)).or_default().push(i as u32);
    }
    groups.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hour() -> WindowSize {
        WindowSize::from_millis(HOUR).unwrap()
    }

    #[test]
    fn start_of_floors_also_before_epoch() {
        assert_eq!(hour().start_of(0), 0);
        assert_eq!(hour().start_of(HOUR - 1), 0);
        assert_eq!(hour().start_of(HOUR), HOUR);
        assert_eq!(hour().start_of(-1), -HOUR);
    }

    #[test]
    fn layouts() {
        let l = Layout::default_for(hour());
        // 2026-11-24T13:45:00Z
        let t = 1_795_527_900_000;
        assert_eq!(
            l.path(hour().start_of(t)).unwrap(),
            "date=2026-11-24/hour=13"
        );
        let q = WindowSize::from_millis(15 * MINUTE).unwrap();
        assert_eq!(
            Layout::default_for(q).path(q.start_of(t)).unwrap(),
            "date=2026-11-24/hour=13/minute=45"
        );
        let d = WindowSize::from_millis(DAY).unwrap();
        assert_eq!(
            Layout::default_for(d).path(d.start_of(t)).unwrap(),
            "date=2026-11-24"
        );
        let custom = Layout::parse("year={year}/month={month}/day={day}/h={hour}", hour()).unwrap();
        assert_eq!(custom.path(t).unwrap(), "year=2026/month=11/day=24/h=13");
        assert_eq!(
            l.path(i64::MAX),
            None,
            "no made-up folder for a time chrono cannot show"
        );
    }

    #[test]
    fn layout_must_tell_windows_apart() {
        assert!(Layout::parse("date={date}", hour()).is_err());
        assert!(Layout::parse("date={date}/x={nope}", hour()).is_err());
        assert!(Layout::parse("../date={date}/hour={hour}", hour()).is_err());
        let q = WindowSize::from_millis(15 * MINUTE).unwrap();
        assert!(Layout::parse("date={date}/hour={hour}", q).is_err());
    }

    proptest! {
        #[test]
        fn grouping_keeps_every_row_once_in_order(
            times in proptest::collection::vec(-10 * DAY..10 * DAY, 0..300),
            size_min in 1i64..2000,
        ) {
            let size = WindowSize::from_millis(size_min * MINUTE).unwrap();
            let groups = group_by_window(size, &times);
            let mut seen = vec![false; times.len()];
            let mut last_start = i64::MIN;
            for (start, rows) in &groups {
                prop_assert!(*start > last_start);
                last_start = *start;
                prop_assert!(rows.windows(2).all(|w| w[0] < w[1]));
                for &r in rows {
                    let t = times[r as usize];
                    prop_assert!(t >= *start && t < start + size.millis());
                    prop_assert!(!seen[r as usize]);
                    seen[r as usize] = true;
                }
            }
            prop_assert!(seen.iter().all(|s| *s));
        }
    }
}
