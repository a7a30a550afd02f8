//! Drawing the `FIDO:/` QR code: in the terminal with Unicode half blocks, or to a PNG, SVG
//! or text file.
//!
//! The URL is upper-case `FIDO:/` followed by digits, so the encoder's optimal segmentation
//! puts the prefix in alphanumeric mode and the rest in numeric mode (docs/protocol.md §2.3): a typical
//! code is version 4 or 5 and scans easily from a laptop screen.

use std::path::Path;

use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

/// Why a QR code could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The text does not fit in a QR code.
    #[error("text does not fit in a QR code: {0}")]
    TooLong(String),
    /// The output file's extension is not one we write.
    #[error("unsupported QR output format {0:?}: use a .png, .svg or .txt file name")]
    UnknownFormat(String),
    /// Writing the file failed.
    #[error("cannot write QR code to {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The output formats of [`write_file`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QrFormat {
    /// PNG, 8 pixels a module with a 4-module quiet zone.
    Png,
    /// SVG, for web pages and print.
    Svg,
    /// The `FIDO:/` text itself.
    Text,
}

impl QrFormat {
    /// Picks the format from a file name's extension, case-insensitively.
    pub fn from_path(path: &Path) -> Result<Self, RenderError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "png" => Ok(Self::Png),
            "svg" => Ok(Self::Svg),
            "txt" | "text" => Ok(Self::Text),
            _ => Err(RenderError::UnknownFormat(path.display().to_string())),
        }
    }
}

fn code(text: &str) -> Result<QrCode, RenderError> {
    // Medium error correction: robust to a glare spot on a screen, still a small code.
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| RenderError::TooLong(e.to_string()))
}

/// The QR code as lines of Unicode half blocks, two modules per character cell, with a quiet
/// zone. Light modules are drawn as blocks, so on the usual dark terminal the code shows dark
/// on light as cameras expect.
pub fn terminal(text: &str) -> Result<String, RenderError> {
    Ok(code(text)?
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// The QR code as an SVG document.
pub fn svg(text: &str) -> Result<String, RenderError> {
    Ok(code(text)?
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// The QR code as 8-bit greyscale pixels, row by row, `scale` pixels a module with a 4-module
/// quiet zone: `(side, pixels)`, the image being `side` × `side`.
pub fn greyscale(text: &str, scale: usize) -> Result<(usize, Vec<u8>), RenderError> {
    const QUIET: usize = 4;
    let scale = scale.clamp(1, 32);
    let code = code(text)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * scale;
    let mut pixels = vec![0xffu8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (mx, my) = (i % modules + QUIET, i / modules + QUIET);
            for y in my * scale..(my + 1) * scale {
                pixels[y * side + mx * scale..y * side + (mx + 1) * scale].fill(0);
            }
        }
    }
    Ok((side, pixels))
}

/// The QR code as PNG bytes: 8-bit greyscale, 8 pixels a module, a 4-module quiet zone.
pub fn png(text: &str) -> Result<Vec<u8>, RenderError> {
    let (side, pixels) = greyscale(text, 8)?;
    let failed = |e: png::EncodingError| RenderError::Write {
        path: "<memory>".into(),
        reason: e.to_string(),
    };
    let mut out = Vec::new();
    let side = u32::try_from(side).map_err(|_| RenderError::TooLong(text.len().to_string()))?;
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(failed)?;
    writer.write_image_data(&pixels).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(out)
}

/// Writes the QR code to `path` in the format its extension names.
pub fn write_file(text: &str, path: &Path) -> Result<(), RenderError> {
    let bytes = match QrFormat::from_path(path)? {
        QrFormat::Png => png(text)?,
        QrFormat::Svg => svg(text)?.into_bytes(),
        QrFormat::Text => format!("{text}\n").into_bytes(),
    };
    // Every format holds the QR secret: readable by its owner only, like the command line
    // it replaces (a new file; an existing one keeps its mode).
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?
            .write_all(&bytes)
    };
    write().map_err(|e| RenderError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "FIDO:/613480203127081285744004592498406931620119428104106093036823815651237408082853162018131917405012463102223225045326437000830214302193130413076513023203066";

    #[test]
    fn mixed_mode_keeps_the_code_small() {
        let c = code(URL).unwrap();
        // 6 alphanumeric characters and ~150 digits fit version 5 at level M; byte mode
        // would need version 8 or more.
        assert!(
            c.width() <= 4 * 6 + 17,
            "version too large: width {}",
            c.width()
        );
    }

    #[test]
    fn terminal_rendering_uses_half_blocks() {
        let t = terminal(URL).unwrap();
        assert!(t.contains('▀') || t.contains('▄'));
        let lines: Vec<_> = t.lines().collect();
        let width = code(URL).unwrap().width() + 8;
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == width));
    }

    #[test]
    fn files_by_extension() {
        let dir = std::env::temp_dir().join(format!("hybridge-render-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_file(URL, &dir.join("a.PNG")).unwrap();
        assert_eq!(
            &std::fs::read(dir.join("a.PNG")).unwrap()[..8],
            b"\x89PNG\r\n\x1a\n"
        );
        write_file(URL, &dir.join("a.svg")).unwrap();
        assert!(
            std::fs::read_to_string(dir.join("a.svg"))
                .unwrap()
                .contains("<svg")
        );
        write_file(URL, &dir.join("a.txt")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.txt")).unwrap(),
            format!("{URL}\n")
        );
        assert!(matches!(
            write_file(URL, &dir.join("a.gif")),
            Err(RenderError::UnknownFormat(_))
        ));
        assert!(matches!(
            write_file(URL, &dir.join("missing/a.png")),
            Err(RenderError::Write { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn too_long() {
        assert!(matches!(
            terminal(&"9".repeat(8000)),
            Err(RenderError::TooLong(_))
        ));
    }
}
