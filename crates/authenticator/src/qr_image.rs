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
    let (width, height, luma) = decode_luma(bytes)?;
    decode_qr_greyscale(width, height, &luma)
}

/// [`decode_qr_image`] for pixels already decoded: 8-bit greyscale, `width` × `height`, row by
/// row (as a screen capture or a notification's image gives them).
pub fn decode_qr_greyscale(
    width: usize,
    height: usize,
    luma: &[u8],
) -> Result<String, QrImageError> {
    if let Some(e) = too_large(width, height) {
        return Err(e);
    }
    if width.checked_mul(height) != Some(luma.len()) {
        return Err(QrImageError::Image(format!(
            "{} bytes of pixels for a {width}×{height} image",
            luma.len()
        )));
    }
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| luma[y * width + x]);
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

/// Most memory a decoder may take for one image: an 8192² RGBA image and change.
const MAX_DECODE_BYTES: usize = 512 << 20;

/// The image as 8-bit greyscale, row by row: PNG (any colour type and depth) or JPEG, told
/// apart by their signatures. Small single-purpose decoders, not a general image library.
fn decode_luma(bytes: &[u8]) -> Result<(usize, usize, Vec<u8>), QrImageError> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    const JPEG: &[u8] = &[0xff, 0xd8, 0xff];
    if bytes.starts_with(PNG) {
        decode_png(bytes)
    } else if bytes.starts_with(JPEG) {
        decode_jpeg(bytes)
    } else {
        Err(QrImageError::Image("not a PNG or JPEG file".into()))
    }
}

fn too_large(w: usize, h: usize) -> Option<QrImageError> {
    let side = MAX_IMAGE_SIDE as usize;
    (w > side || h > side || w == 0 || h == 0).then(|| {
        QrImageError::Image(format!(
            "{w}×{h} pixels: a photo of a QR code is between 1 and {side} pixels a side"
        ))
    })
}

fn decode_png(bytes: &[u8]) -> Result<(usize, usize, Vec<u8>), QrImageError> {
    let bad = |e: png::DecodingError| QrImageError::Image(format!("PNG: {e}"));
    let mut decoder = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits {
            bytes: MAX_DECODE_BYTES,
        },
    );
    // Palettes and low bit depths expanded, 16 bits cut to 8: one byte a channel.
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(bad)?;
    let info = reader.info();
    let (w, h) = (info.width as usize, info.height as usize);
    if let Some(e) = too_large(w, h) {
        return Err(e);
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| QrImageError::Image("PNG: the image is too large".into()))?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(bad)?;
    let channels = frame.color_type.samples();
    let stride = frame.line_size;
    let mut luma = Vec::with_capacity(w * h);
    for row in buf.chunks(stride).take(h) {
        for px in row.chunks(channels).take(w) {
            luma.push(match px {
                // Grey, grey + alpha.
                [g] | [g, _] => *g,
                // RGB, RGBA: Rec. 601 luma, in integers.
                [r, g, b, ..] => {
                    ((u32::from(*r) * 299 + u32::from(*g) * 587 + u32::from(*b) * 114) / 1000) as u8
                }
                [] => 0,
            });
        }
    }
    if luma.len() != w * h {
        return Err(QrImageError::Image("PNG: the image data is short".into()));
    }
    Ok((w, h, luma))
}

fn decode_jpeg(bytes: &[u8]) -> Result<(usize, usize, Vec<u8>), QrImageError> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let side = MAX_IMAGE_SIDE as usize;
    let options = DecoderOptions::default()
        .set_max_width(side)
        .set_max_height(side)
        .jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let luma = decoder
        .decode()
        .map_err(|e| QrImageError::Image(format!("JPEG: {e:?}")))?;
    let info = decoder
        .info()
        .ok_or_else(|| QrImageError::Image("JPEG: no image header".into()))?;
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    if let Some(e) = too_large(w, h) {
        return Err(e);
    }
    if luma.len() != w * h {
        return Err(QrImageError::Image("JPEG: the image data is short".into()));
    }
    Ok((w, h, luma))
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
        // Screenshots come as RGBA, scanners' files as 16-bit grey.
        let luma = image::load_from_memory(&png_of(URL)).unwrap();
        for img in [
            image::DynamicImage::ImageRgba8(luma.to_rgba8()),
            image::DynamicImage::ImageLuma16(luma.to_luma16()),
            image::DynamicImage::ImageLumaA8(luma.to_luma_alpha8()),
        ] {
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png).unwrap();
            assert_eq!(
                decode_qr_image(png.get_ref()).unwrap(),
                URL,
                "{:?}",
                img.color()
            );
        }
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
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut prepared =
            rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| img.as_raw()[y * w + x]);
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
