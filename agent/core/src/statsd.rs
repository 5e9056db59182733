//! A zero-copy parser for DogStatsD/StatsD lines.
//!
//! Datagrams come from any local process, so every byte is untrusted: the parser never panics,
//! never allocates, and names the reason for every line it rejects. One bad line never costs the
//! rest of its datagram.
//!
//! Accepted: `name:value[:value...]|type[|@rate][|#tag,key:value...][|c:container][|T<unix>][|e:..]`
//! with types `c`, `g`, `ms`, `h`, `d`, `s`. A gauge value with a leading sign is a delta
//! (`temp:-3|g`), as in StatsD.

use std::fmt;

/// Longest accepted metric name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Longest accepted line, in bytes.
pub const MAX_LINE_LEN: usize = 8192;
/// Most tags accepted on one line.
pub const MAX_TAGS: usize = 32;
/// Longest accepted tag (`key:value`), in bytes.
pub const MAX_TAG_LEN: usize = 200;

/// What a metric line measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// `c`: a count of events, summed.
    Counter,
    /// `g`: a level; the last value wins (a signed value adds to it).
    Gauge,
    /// `ms`: a duration in milliseconds, kept in a histogram.
    Timer,
    /// `h`: a value kept in a histogram.
    Histogram,
    /// `d`: a distribution, kept in a histogram like `h`.
    Distribution,
    /// `s`: a set; the number of distinct values is counted.
    Set,
}

impl MetricKind {
    /// The type code used on the wire.
    pub const fn code(self) -> &'static str {
        match self {
            MetricKind::Counter => "c",
            MetricKind::Gauge => "g",
            MetricKind::Timer => "ms",
            MetricKind::Histogram => "h",
            MetricKind::Distribution => "d",
            MetricKind::Set => "s",
        }
    }

    /// A name for labels and documents.
    pub const fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Timer => "timer",
            MetricKind::Histogram => "histogram",
            MetricKind::Distribution => "distribution",
            MetricKind::Set => "set",
        }
    }

    /// Whether values of this kind go into an HDR histogram.
    pub const fn is_histogram(self) -> bool {
        matches!(self, MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution)
    }

    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "c" => MetricKind::Counter,
            "g" => MetricKind::Gauge,
            "ms" => MetricKind::Timer,
            "h" => MetricKind::Histogram,
            "d" => MetricKind::Distribution,
            "s" => MetricKind::Set,
            _ => return None,
        })
    }
}

/// Why a line was rejected. Each reason is a label value of the agent's error counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseErrorKind {
    /// The line is longer than [`MAX_LINE_LEN`].
    #[error("line is longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    /// The line is not valid UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// The line is a DogStatsD event (`_e{`) or service check (`_sc|`), which the agent does not take.
    #[error("events and service checks are not supported")]
    Unsupported,
    /// There is no `:` between name and value.
    #[error("no ':' separating name and value")]
    MissingValue,
    /// The name is empty, too long, or holds characters outside printable ASCII.
    #[error("metric name is empty, longer than {MAX_NAME_LEN} bytes, or not printable ASCII")]
    BadName,
    /// There is no `|type` section.
    #[error("no '|type' after the value")]
    MissingType,
    /// The type is not one of `c g ms h d s`.
    #[error("type is not one of c, g, ms, h, d, s")]
    UnknownType,
    /// A value is not a finite number (or a set member is empty).
    #[error("value is not a finite number")]
    BadValue,
    /// A timer, histogram or distribution value is negative.
    #[error("timer/histogram/distribution value is negative")]
    NegativeValue,
    /// More than one value for a gauge or set, or a set member that holds ':'.
    #[error("only counters, timers, histograms and distributions take several values")]
    UnexpectedMultiValue,
    /// The sample rate is not a number in (0, 1].
    #[error("sample rate is not a number in (0, 1]")]
    BadSampleRate,
    /// A tag is empty-keyed, too long, or holds characters outside printable ASCII.
    #[error("tag has an empty key, is longer than {MAX_TAG_LEN} bytes, or is not printable ASCII")]
    BadTag,
    /// More than [`MAX_TAGS`] tags.
    #[error("more than {MAX_TAGS} tags")]
    TooManyTags,
    /// A `|` section the parser does not know, or a known one given twice.
    #[error("unknown or repeated '|' section")]
    UnknownSection,
}

impl ParseErrorKind {
    /// Every reason, for pre-registering counters.
    pub const ALL: [ParseErrorKind; 14] = [
        ParseErrorKind::LineTooLong,
        ParseErrorKind::NotUtf8,
        ParseErrorKind::Unsupported,
        ParseErrorKind::MissingValue,
        ParseErrorKind::BadName,
        ParseErrorKind::MissingType,
        ParseErrorKind::UnknownType,
        ParseErrorKind::BadValue,
        ParseErrorKind::NegativeValue,
        ParseErrorKind::UnexpectedMultiValue,
        ParseErrorKind::BadSampleRate,
        ParseErrorKind::BadTag,
        ParseErrorKind::TooManyTags,
        ParseErrorKind::UnknownSection,
    ];

    /// A short snake_case name, used as a metric label.
    pub const fn label(self) -> &'static str {
        match self {
            ParseErrorKind::LineTooLong => "line_too_long",
            ParseErrorKind::NotUtf8 => "not_utf8",
            ParseErrorKind::Unsupported => "unsupported",
            ParseErrorKind::MissingValue => "missing_value",
            ParseErrorKind::BadName => "bad_name",
            ParseErrorKind::MissingType => "missing_type",
            ParseErrorKind::UnknownType => "unknown_type",
            ParseErrorKind::BadValue => "bad_value",
            ParseErrorKind::NegativeValue => "negative_value",
            ParseErrorKind::UnexpectedMultiValue => "unexpected_multi_value",
            ParseErrorKind::BadSampleRate => "bad_sample_rate",
            ParseErrorKind::BadTag => "bad_tag",
            ParseErrorKind::TooManyTags => "too_many_tags",
            ParseErrorKind::UnknownSection => "unknown_section",
        }
    }
}

/// A rejected line: why, and the (lossily decoded, truncated) line for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("statsd line {line_number} rejected: {kind}: {excerpt:?}")]
pub struct ParseError {
    /// Why the line was rejected.
    pub kind: ParseErrorKind,
    /// One-based line number within its datagram.
    pub line_number: usize,
    /// At most 80 bytes of the line, lossily decoded, for the log.
    pub excerpt: String,
}

/// How a gauge line changes the gauge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GaugeUpdate {
    /// Set the gauge to this value.
    Set(f64),
    /// Add this (signed) value to the gauge.
    Delta(f64),
}

/// One accepted line, borrowing from the datagram.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    /// Metric name.
    pub name: &'a str,
    /// What the line measures.
    pub kind: MetricKind,
    /// The raw, validated value section (`12`, `1:2:3`, a set member, `+4`).
    pub values: &'a str,
    /// Sample rate in (0, 1]; 1 when absent.
    pub sample_rate: f64,
    /// The raw, validated tag section without its `#` (empty when absent).
    pub tags: &'a str,
}

impl<'a> Line<'a> {
    /// The numeric values of a counter, timer, histogram or distribution line.
    /// Values were validated by the parser; this re-reads them without failing.
    pub fn numbers(&self) -> impl Iterator<Item = f64> + 'a {
        fields(self.values, b':').filter_map(number)
    }

    /// The update a gauge line asks for (for other kinds, the first value as a `Set`).
    pub fn gauge_update(&self) -> GaugeUpdate {
        let value = number(self.values).unwrap_or(0.0);
        if self.values.starts_with('+') || self.values.starts_with('-') {
            GaugeUpdate::Delta(value)
        } else {
            GaugeUpdate::Set(value)
        }
    }

    /// The tags as `(key, value)`; a bare tag has an empty value.
    pub fn tag_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        tag_pairs(self.tags)
    }
}

/// Splits a validated tag section into `(key, value)` pairs; a bare tag has an empty value.
pub fn tag_pairs(tags: &str) -> impl Iterator<Item = (&str, &str)> {
    fields(tags, b',').filter(|t| !t.is_empty()).map(|t| split_once(t, b':').unwrap_or((t, "")))
}

/// Splits `s` at every `separator` (an ASCII byte) with a plain byte loop: StatsD fields are a
/// few bytes long, too short for `str::split`'s `memchr` to pay for its set-up.
pub fn fields(s: &str, separator: u8) -> impl Iterator<Item = &str> + Clone {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == separator) {
            // Splitting at an ASCII byte always falls on a character boundary.
            Some(i) => {
                rest = r.get(i + 1..);
                r.get(..i)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// `s` before and after its first `separator` (an ASCII byte), like `str::split_once`.
fn split_once(s: &str, separator: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == separator)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// A number: plain integers of up to 15 digits (most StatsD values), exact in an `f64`, without
/// the general float parser.
fn number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    if !bytes.is_empty() && bytes.len() <= 15 && bytes.iter().all(u8::is_ascii_digit) {
        let integer = bytes.iter().fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
        return Some(integer as f64);
    }
    text.parse::<f64>().ok()
}

/// Parses every line of a datagram, calling `on_line` with each result in order.
/// Empty lines (and a trailing newline) are skipped.
pub fn parse_datagram<'a>(datagram: &'a [u8], mut on_line: impl FnMut(Result<Line<'a>, ParseError>)) {
    for (index, raw) in datagram.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        on_line(parse_line(raw).map_err(|kind| ParseError { kind, line_number: index + 1, excerpt: excerpt(raw) }));
    }
}

fn excerpt(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(80)];
    String::from_utf8_lossy(cut).into_owned()
}

/// Parses one line (without its newline).
pub fn parse_line(raw: &[u8]) -> Result<Line<'_>, ParseErrorKind> {
    if raw.len() > MAX_LINE_LEN {
        return Err(ParseErrorKind::LineTooLong);
    }
    let line = std::str::from_utf8(raw).map_err(|_| ParseErrorKind::NotUtf8)?;
    if line.starts_with("_e{") || line.starts_with("_sc|") {
        return Err(ParseErrorKind::Unsupported);
    }
    let (name, rest) = split_once(line, b':').ok_or(ParseErrorKind::MissingValue)?;
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.bytes().all(is_name_byte) {
        return Err(ParseErrorKind::BadName);
    }
    let mut sections = fields(rest, b'|');
    let values = sections.next().unwrap_or("");
    let kind = match sections.next() {
        None => return Err(ParseErrorKind::MissingType),
        Some(code) => MetricKind::from_code(code).ok_or(ParseErrorKind::UnknownType)?,
    };
    validate_values(kind, values)?;

    let mut sample_rate = None;
    let mut tags = None;
    let mut container = false;
    let mut timestamp = false;
    let mut external = false;
    for section in sections {
        if let Some(rate) = section.strip_prefix('@') {
            let rate = number(rate).ok_or(ParseErrorKind::BadSampleRate)?;
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(ParseErrorKind::BadSampleRate);
            }
            set_once(&mut sample_rate, rate)?;
        } else if let Some(tag_section) = section.strip_prefix('#') {
            validate_tags(tag_section)?;
            set_once(&mut tags, tag_section)?;
        } else if section.starts_with("c:") {
            flag_once(&mut container)?;
        } else if section.starts_with("e:") {
            flag_once(&mut external)?;
        } else if let Some(ts) = section.strip_prefix('T') {
            // DogStatsD client-side timestamps are accepted but the agent aggregates on arrival.
            if ts.parse::<u64>().is_err() {
                return Err(ParseErrorKind::UnknownSection);
            }
            flag_once(&mut timestamp)?;
        } else {
            return Err(ParseErrorKind::UnknownSection);
        }
    }
    Ok(Line { name, kind, values, sample_rate: sample_rate.unwrap_or(1.0), tags: tags.unwrap_or("") })
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), ParseErrorKind> {
    if slot.is_some() {
        return Err(ParseErrorKind::UnknownSection);
    }
    *slot = Some(value);
    Ok(())
}

fn flag_once(flag: &mut bool) -> Result<(), ParseErrorKind> {
    if std::mem::replace(flag, true) {
        return Err(ParseErrorKind::UnknownSection);
    }
    Ok(())
}

const fn is_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'|' && b != b'#' && b != b','
}

fn parse_number(text: &str) -> Result<f64, ParseErrorKind> {
    // Rust's float parser also takes "inf", "NaN" and "infinity": none is a measurement.
    match number(text) {
        Some(v) if v.is_finite() => Ok(v),
        _ => Err(ParseErrorKind::BadValue),
    }
}

fn validate_values(kind: MetricKind, values: &str) -> Result<(), ParseErrorKind> {
    match kind {
        MetricKind::Set => {
            if values.is_empty() || !values.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ParseErrorKind::BadValue);
            }
            if values.bytes().any(|b| b == b':') {
                return Err(ParseErrorKind::UnexpectedMultiValue);
            }
            Ok(())
        }
        MetricKind::Gauge => {
            if values.bytes().any(|b| b == b':') {
                return Err(ParseErrorKind::UnexpectedMultiValue);
            }
            parse_number(values).map(drop)
        }
        MetricKind::Counter => fields(values, b':').try_for_each(|v| parse_number(v).map(drop)),
        MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution => fields(values, b':')
            .try_for_each(|v| if parse_number(v)? < 0.0 { Err(ParseErrorKind::NegativeValue) } else { Ok(()) }),
    }
}

fn validate_tags(section: &str) -> Result<(), ParseErrorKind> {
    let mut count = 0usize;
    for tag in fields(section, b',') {
        if tag.is_empty() {
            continue; // a trailing or doubled comma is harmless
        }
        count += 1;
        if count > MAX_TAGS {
            return Err(ParseErrorKind::TooManyTags);
        }
        if tag.len() > MAX_TAG_LEN
            || tag.starts_with(':')
            || !tag.bytes().all(|b| b.is_ascii_graphic() && b != b'|' && b != b'#')
        {
            return Err(ParseErrorKind::BadTag);
        }
    }
    Ok(())
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &str) -> Line<'_> {
        parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?} rejected: {e}"))
    }

    fn err(line: &str) -> ParseErrorKind {
        parse_line(line.as_bytes()).expect_err(line)
    }

    #[test]
    fn every_type_parses() {
        let cases = [
            ("a:1|c", MetricKind::Counter),
            ("a:1|g", MetricKind::Gauge),
            ("a:1.5|ms", MetricKind::Timer),
            ("a:3|h", MetricKind::Histogram),
            ("a:3|d", MetricKind::Distribution),
            ("a:user-42|s", MetricKind::Set),
        ];
        for (line, kind) in cases {
            let parsed = ok(line);
            assert_eq!(parsed.kind, kind, "{line}");
            assert_eq!(parsed.name, "a");
            assert_eq!(parsed.sample_rate, 1.0);
            assert_eq!(parsed.tags, "");
        }
        assert_eq!(ok("a:user-42|s").values, "user-42");
        assert_eq!(ok("a:1.5|ms").numbers().collect::<Vec<_>>(), vec![1.5]);
    }

    #[test]
    fn sample_rate_and_tags() {
        let line = ok("checkout.requests:1|c|@0.1|#class:wedding-critical,wedding:w-123,region:eu-west,canary");
        assert_eq!(line.sample_rate, 0.1);
        let tags: Vec<_> = line.tag_pairs().collect();
        assert_eq!(
            tags,
            vec![("class", "wedding-critical"), ("wedding", "w-123"), ("region", "eu-west"), ("canary", "")]
        );
        // Tags before the rate, values with colons, trailing comma.
        let line = ok("x:2|ms|#url:http://a/b,|@0.5");
        assert_eq!(line.sample_rate, 0.5);
        assert_eq!(line.tag_pairs().collect::<Vec<_>>(), vec![("url", "http://a/b")]);
    }

    #[test]
    fn dogstatsd_extensions_are_accepted() {
        let line = ok("x:1|c|#a:b|c:container-id|T1700000000|e:external");
        assert_eq!(line.tags, "a:b");
        assert_eq!(err("x:1|c|Tnow"), ParseErrorKind::UnknownSection);
        assert_eq!(err("x:1|c|z:what"), ParseErrorKind::UnknownSection);
    }

    #[test]
    fn multi_values() {
        assert_eq!(ok("lat:1:2:3.5|h").numbers().collect::<Vec<_>>(), vec![1.0, 2.0, 3.5]);
        assert_eq!(ok("hits:1:2|c").numbers().sum::<f64>(), 3.0);
        assert_eq!(err("g:1:2|g"), ParseErrorKind::UnexpectedMultiValue);
        assert_eq!(err("s:a:b|s"), ParseErrorKind::UnexpectedMultiValue);
        assert_eq!(err("lat:1::2|h"), ParseErrorKind::BadValue);
    }

    #[test]
    fn gauge_deltas() {
        assert_eq!(ok("g:5|g").gauge_update(), GaugeUpdate::Set(5.0));
        assert_eq!(ok("g:+5|g").gauge_update(), GaugeUpdate::Delta(5.0));
        assert_eq!(ok("g:-2.5|g").gauge_update(), GaugeUpdate::Delta(-2.5));
    }

    #[test]
    fn every_rejection_reason() {
        let long = format!("a:1|c|#{}", "t,".repeat(MAX_LINE_LEN));
        assert_eq!(err(&long), ParseErrorKind::LineTooLong);
        assert_eq!(parse_line(b"a:\xff|c"), Err(ParseErrorKind::NotUtf8));
        assert_eq!(err("_e{5,4}:title|text"), ParseErrorKind::Unsupported);
        assert_eq!(err("_sc|name|0"), ParseErrorKind::Unsupported);
        assert_eq!(err("no-value"), ParseErrorKind::MissingValue);
        assert_eq!(err(":1|c"), ParseErrorKind::BadName);
        assert_eq!(err("a b:1|c"), ParseErrorKind::BadName);
        assert_eq!(err(&format!("{}:1|c", "n".repeat(MAX_NAME_LEN + 1))), ParseErrorKind::BadName);
        assert_eq!(err("a:1"), ParseErrorKind::MissingType);
        assert_eq!(err("a:1|x"), ParseErrorKind::UnknownType);
        assert_eq!(err("a:1|"), ParseErrorKind::UnknownType);
        assert_eq!(err("a:abc|c"), ParseErrorKind::BadValue);
        assert_eq!(err("a:|c"), ParseErrorKind::BadValue);
        assert_eq!(err("a:NaN|g"), ParseErrorKind::BadValue);
        assert_eq!(err("a:inf|ms"), ParseErrorKind::BadValue);
        assert_eq!(err("a:|s"), ParseErrorKind::BadValue);
        assert_eq!(err("a:-1|ms"), ParseErrorKind::NegativeValue);
        assert_eq!(err("a:1|c|@0"), ParseErrorKind::BadSampleRate);
        assert_eq!(err("a:1|c|@1.5"), ParseErrorKind::BadSampleRate);
        assert_eq!(err("a:1|c|@x"), ParseErrorKind::BadSampleRate);
        assert_eq!(err("a:1|c|@0.5|@0.5"), ParseErrorKind::UnknownSection);
        assert_eq!(err("a:1|c|#:v"), ParseErrorKind::BadTag);
        assert_eq!(err("a:1|c|#a b"), ParseErrorKind::BadTag);
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}:v")).collect();
        assert_eq!(err(&format!("a:1|c|#{}", many.join(","))), ParseErrorKind::TooManyTags);
        for reason in ParseErrorKind::ALL {
            assert!(!reason.label().is_empty());
            assert!(!reason.to_string().is_empty());
        }
    }

    #[test]
    fn one_bad_line_does_not_cost_the_datagram() {
        let datagram = b"a:1|c\nbroken\r\n\nb:2|g\r\nc:x|ms\nd:4|ms\n";
        let mut good = Vec::new();
        let mut bad = Vec::new();
        parse_datagram(datagram, |r| match r {
            Ok(line) => good.push(line.name),
            Err(e) => bad.push((e.line_number, e.kind)),
        });
        assert_eq!(good, vec!["a", "b", "d"]);
        assert_eq!(bad, vec![(2, ParseErrorKind::MissingValue), (5, ParseErrorKind::BadValue)]);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            parse_datagram(&bytes, |result| {
                if let Ok(line) = result {
                    // Accepted lines uphold the parser's promises.
                    assert!(!line.name.is_empty() && line.name.len() <= MAX_NAME_LEN);
                    assert!(line.sample_rate > 0.0 && line.sample_rate <= 1.0);
                    assert!(line.tag_pairs().count() <= MAX_TAGS);
                    if line.kind != MetricKind::Set {
                        assert!(line.numbers().all(f64::is_finite));
                    }
                }
            });
        }

        #[test]
        fn statsd_shaped_text_never_panics(text in "[a-z.:|@#,0-9\\-+ceghmsdT\\n]{0,200}") {
            parse_datagram(text.as_bytes(), |_| {});
        }

        #[test]
        fn well_formed_lines_round_trip(
            name in "[a-z][a-z0-9_.]{0,30}",
            value in 0.0f64..1e9,
            kind in prop::sample::select(vec!["c", "g", "ms", "h", "d"]),
            rate in 0.01f64..=1.0,
            tags in proptest::collection::vec("[a-z]{1,8}:[a-z0-9-]{1,8}", 0..5),
        ) {
            let text = format!("{name}:{value}|{kind}|@{rate}|#{}", tags.join(","));
            let line = parse_line(text.as_bytes()).expect("well-formed line");
            prop_assert_eq!(line.name, name.as_str());
            prop_assert_eq!(line.kind.code(), kind);
            prop_assert_eq!(line.numbers().next(), Some(value));
            prop_assert_eq!(line.tag_pairs().count(), tags.len());
        }
    }
}
