//! Reading the laptop's QR code from a photo or screenshot (PNG or JPEG), as a phone's camera
//! would.

/// Largest image file we try to decode. A phone photo is a few MB; anything larger is not a
/// photo of a QR code, and decoding it could take a lot of memory.
pub const MAX_IMAGE_BYTES: usize = 32 << 20;
/// Largest image we decode, in pixels per side.
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// Why no `FIDO:/` text could be read from an image.
#[derive(Debug, thiserror::Error)]
pub enum QrImageError {
    /// The file is too large to be a photo of a QR code.
    #[error("image is larger than {MAX_IMAGE_BYTES} bytes")]
    TooLarge,
    /// The bytes are not a PNG or JPEG image we can decode.
    #[error("cannot decode image (PNG or JPEG expected): {0}")]
    Image(String),
    /// No QR code was found in the image.
    #[error(
        "no QR code was found in the image (or none could be read): take a sharper photo, straight on"
    )]
    NoCode,
    /// QR codes were found but none holds a `FIDO:/` URL.
    #[error("the image's QR code is not a FIDO hybrid code (it does not start with FIDO:/)")]
    NotFido,
}

/// Finds the QR code in an image and returns its `FIDO:/` text. Where an image holds several
/// codes, the first one whose text starts with `FIDO:/` (case-insensitively) wins.
pub fn decode_qr_image(bytes: &[u8]) -> Result<String, QrImageError> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(QrImageError::TooLarge);
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| QrImageError::Image(e.to_string()))?;
    let mut reader = reader;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(512 << 20);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| QrImageError::Image(e.to_string()))?
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    // Finder patterns alone are not a QR code: a blurred or cut-off one is found but does not
    // decode, and is reported as no code, not as someone else's.
    let texts: Vec<String> = prepared
        .detect_grids()
        .iter()
        .filter_map(|g| g.decode().ok().map(|(_, text)| text))
        .collect();
    if texts.is_empty() {
        return Err(QrImageError::NoCode);
    }
    texts
        .into_iter()
        .find(|t| {
            let prefix = hybridge_proto::qr::PREFIX;
            t.get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        })
        .ok_or(QrImageError::NotFido)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_of(text: &str) -> Vec<u8> {
        let img = qrcode::QrCode::new(text.as_bytes())
            .unwrap()
            .render::<image::Luma<u8>>()
            .module_dimensions(6, 6)
            .build();
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    const URL: &str = "FIDO:/613480203127081285744004592498406931620119428104106093036823815651237408082853162018131917405012463102223225045326437000830214302193130413076513023203066";

    #[test]
    fn reads_fido_codes_from_png_and_jpeg() {
        assert_eq!(decode_qr_image(&png_of(URL)).unwrap(), URL);
        let img = image::load_from_memory(&png_of(URL)).unwrap().to_rgb8();
        let mut jpeg = std::io::Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        assert_eq!(decode_qr_image(jpeg.get_ref()).unwrap(), URL);
    }

    #[test]
    fn clear_errors() {
        assert!(matches!(
            decode_qr_image(&png_of("https://example.com")),
            Err(QrImageError::NotFido)
        ));
        assert!(matches!(
            decode_qr_image(b"not an image"),
            Err(QrImageError::Image(_))
        ));
        let blank = image::GrayImage::from_pixel(64, 64, image::Luma([255]));
        let mut out = std::io::Cursor::new(Vec::new());
        blank.write_to(&mut out, image::ImageFormat::Png).unwrap();
        assert!(matches!(
            decode_qr_image(out.get_ref()),
            Err(QrImageError::NoCode)
        ));
    }

    /// A code whose finder patterns are found but whose data cannot be read (here: a white
    /// band across the middle, as a glare or a fold would leave) is no QR code, not a code
    /// "that does not start with FIDO:/".
    #[test]
    fn a_code_that_cannot_be_read_is_reported_as_no_code() {
        let mut img = image::load_from_memory(&png_of(URL)).unwrap().to_luma8();
        let (w, h) = img.dimensions();
        for y in h * 2 / 5..h * 3 / 5 {
            for x in w / 4..w * 3 / 4 {
                img.put_pixel(x, y, image::Luma([255]));
            }
        }
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        let mut prepared = rqrr::PreparedImage::prepare(img);
        assert!(
            !prepared.detect_grids().is_empty(),
            "the finder patterns are still there"
        );
        assert!(matches!(
            decode_qr_image(out.get_ref()),
            Err(QrImageError::NoCode)
        ));
    }
}
