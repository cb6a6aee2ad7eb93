//! Self-signed certificates for the demo and for local testing.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};

use super::error::TlsError;

/// How long a generated certificate is valid, counted from yesterday (to tolerate clock skew).
pub const SELF_SIGNED_VALIDITY_DAYS: i64 = 365;

/// Generates a self-signed ECDSA P-256 certificate for `names` and writes `cert.pem` and
/// `key.pem` into `dir` (created if missing), returning `(cert_path, key_path)`.
///
/// Names that parse as IP addresses (`127.0.0.1`, `::1`) become IP SANs, the rest DNS SANs
/// (`localhost`, `shop.example.com`, `*.example.com`); the first name is also the subject CN.
/// The certificate is not a CA, so clients can trust it directly (e.g. `curl --cacert
/// cert.pem`, or [`UpstreamRoots::CaFile`](super::UpstreamRoots::CaFile)). Files are
/// replaced atomically (write then rename), so a watcher never sees half a file; on Unix the
/// key file is created with mode 0600.
pub fn self_signed(names: &[&str], dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let Some(first) = names.first() else {
        return Err(TlsError::InvalidName {
            name: String::new(),
            reason: "a self-signed certificate needs at least one name",
        });
    };
    let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params =
        CertificateParams::new(sans).map_err(|source| TlsError::Generate { source })?;
    params.distinguished_name.push(DnType::CommonName, *first);
    params
        .extended_key_usages
        .push(ExtendedKeyUsagePurpose::ServerAuth);
    let today = days_since_epoch(SystemTime::now());
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + SELF_SIGNED_VALIDITY_DAYS);
    params.not_after = rcgen::date_time_ymd(y, m, d);

    let key = KeyPair::generate().map_err(|source| TlsError::Generate { source })?;
    let cert = params
        .self_signed(&key)
        .map_err(|source| TlsError::Generate { source })?;

    std::fs::create_dir_all(dir).map_err(|e| TlsError::from_io(dir, e))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(
        cert = %cert_path.display(),
        key = %key_path.display(),
        names = ?names,
        "generated self-signed certificate"
    );
    Ok((cert_path, key_path))
}

/// Writes to a temporary file in the same directory, then renames over `path`.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    // A leftover temporary file would keep its old mode: start fresh.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(TlsError::from_io(&tmp, e));
        }
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(|e| TlsError::from_io(&tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| TlsError::from_io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| TlsError::from_io(path, e))
}

fn days_since_epoch(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs() / 86_400).unwrap_or(0))
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // The ranges are guaranteed by the arithmetic above: day 1..=31, month 1..=12.
    (
        i32::try_from(year).unwrap_or(i32::MAX),
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
