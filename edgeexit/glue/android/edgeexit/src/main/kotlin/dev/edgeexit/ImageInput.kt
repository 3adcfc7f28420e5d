package dev.edgeexit

/**
 * How an image becomes the bundle's input: the manifest's `input` section, as [EarlyExitClassifier.imageSpec] reads
 * it. [resize] is the method training resized with: "bilinear" (torch's bilinear interpolation without antialias, on
 * [0, 1] floats: the in-memory datasets) or "bilinear_antialias" (PIL's bilinear resize of the 8-bit image: image
 * folders).
 */
class ImageSpec(val channels: Int, val height: Int, val width: Int, val mean: FloatArray, val std: FloatArray,
                val resize: String) {
    init {
        require(channels == 1 || channels == 3) {
            "images give 1 or 3 channels | got: a bundle input of $channels | hint: feed this bundle float arrays"
        }
        require(height >= 1 && width >= 1) { "image size must be positive | got: $height x $width" }
        require(mean.size == channels && std.size == channels) {
            "mean and std need one value per channel | got: ${mean.size} and ${std.size} for $channels channels"
        }
        require(resize == "bilinear" || resize == "bilinear_antialias") {
            "unknown resize method | got: $resize | expected: bilinear | bilinear_antialias"
        }
    }
}

/**
 * An image (8-bit RGB) as the bundle's input, C x H x W floats, computed exactly as edgeexit's Python side
 * (edgeexit/images.py, i.e. training) does: converted to grayscale for a 1-channel bundle (PIL's "L": ITU-R 601-2
 * luma in fixed point), resized by the manifest's method, scaled to [0, 1], normalised as (x - mean) / std.
 * The result goes to [EarlyExitClassifier.classify]; a batch is several of them one after another.
 */
object ImageInput {
    /** [rgb]: [width] x [height] pixels row by row, 3 bytes (R, G, B) each. */
    fun fromRgb(rgb: ByteArray, width: Int, height: Int, spec: ImageSpec): FloatArray {
        checkSize(rgb.size.toLong(), 3L, width, height)
        val n = width * height
        return prepare(IntArray(n) { (rgb[3 * it].toInt() and 0xFF) shl 16 or
            ((rgb[3 * it + 1].toInt() and 0xFF) shl 8) or (rgb[3 * it + 2].toInt() and 0xFF) }, width, height, spec)
    }

    /** [argb]: [width] x [height] pixels row by row, one 0xAARRGGBB int each (Android's Bitmap.getPixels, ARGB_8888).
     *  Alpha is dropped, as PIL's RGBA -> RGB conversion does (no blending onto a background). */
    fun fromArgb(argb: IntArray, width: Int, height: Int, spec: ImageSpec): FloatArray {
        checkSize(argb.size.toLong(), 1L, width, height)
        return prepare(argb, width, height, spec)
    }

    private fun checkSize(size: Long, perPixel: Long, width: Int, height: Int) {
        require(width >= 1 && height >= 1) { "image size must be positive | got: $width x $height" }
        require(size == perPixel * width * height) {
            "pixel buffer has the wrong size | got: $size | expected: $perPixel x $width x $height"
        }
    }

    private fun prepare(pixels: IntArray, width: Int, height: Int, spec: ImageSpec): FloatArray {
        val planes = toChannels(pixels, spec.channels)
        val out = FloatArray(spec.channels * spec.height * spec.width)
        val size = spec.height * spec.width
        for (c in 0 until spec.channels) {
            val scaled = if (spec.resize == "bilinear_antialias") {
                val bytes = pilBilinear(planes[c], width, height, spec.width, spec.height)
                FloatArray(size) { bytes[it] / 255f }
            } else {
                torchBilinear(FloatArray(width * height) { planes[c][it] / 255f }, width, height, spec.width, spec.height)
            }
            for (i in 0 until size) out[c * size + i] = (scaled[i] - spec.mean[c]) / spec.std[c]
        }
        return out
    }

    /** 8-bit planes (0..255) of the channels the bundle takes. */
    private fun toChannels(pixels: IntArray, channels: Int): Array<IntArray> {
        if (channels == 3) {
            return arrayOf(IntArray(pixels.size) { (pixels[it] shr 16) and 0xFF },
                           IntArray(pixels.size) { (pixels[it] shr 8) and 0xFF },
                           IntArray(pixels.size) { pixels[it] and 0xFF })
        }
        // PIL's RGB -> L: (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16
        return arrayOf(IntArray(pixels.size) {
            val p = pixels[it]
            (((p shr 16) and 0xFF) * 19595 + ((p shr 8) and 0xFF) * 38470 + (p and 0xFF) * 7471 + 0x8000) shr 16
        })
    }

    private const val PRECISION_BITS = 32 - 8 - 2  // PIL's fixed point for 8-bit images (Resample.c)

    /** PIL's Image.resize(BILINEAR) of one 8-bit plane: a horizontal then a vertical pass, each rounded to 8 bits,
     *  with PIL's coefficients (the filter widened by the scale when shrinking: the antialias) in fixed point. */
    private fun pilBilinear(plane: IntArray, w: Int, h: Int, outW: Int, outH: Int): IntArray {
        var img = plane
        var width = w
        if (outW != w) {
            val (ksize, bounds, kk) = pilCoefficients(w, outW)
            img = IntArray(outW * h) { i ->
                val y = i / outW
                val x = i % outW
                var ss = 1 shl (PRECISION_BITS - 1)
                for (t in 0 until bounds[2 * x + 1]) ss += plane[y * w + bounds[2 * x] + t] * kk[x * ksize + t]
                clip8(ss)
            }
            width = outW
        }
        if (outH != h) {
            val src = img
            val (ksize, bounds, kk) = pilCoefficients(h, outH)
            img = IntArray(width * outH) { i ->
                val y = i / width
                val x = i % width
                var ss = 1 shl (PRECISION_BITS - 1)
                for (t in 0 until bounds[2 * y + 1]) ss += src[(bounds[2 * y] + t) * width + x] * kk[y * ksize + t]
                clip8(ss)
            }
        }
        return img
    }

    private fun clip8(ss: Int): Int = Math.min(255, Math.max(0, ss shr PRECISION_BITS))

    /** PIL's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter (support 1). */
    private fun pilCoefficients(inSize: Int, outSize: Int): Triple<Int, IntArray, IntArray> {
        val scale = inSize.toDouble() / outSize
        val filterScale = if (scale < 1.0) 1.0 else scale
        val support = 1.0 * filterScale
        val ksize = Math.ceil(support).toInt() * 2 + 1
        val bounds = IntArray(2 * outSize)
        val kk = IntArray(outSize * ksize)
        val k = DoubleArray(ksize)
        for (xx in 0 until outSize) {
            val center = (xx + 0.5) * scale
            val ss = 1.0 / filterScale
            val xmin = Math.max(0, (center - support + 0.5).toInt())
            val xmax = Math.min(inSize, (center + support + 0.5).toInt()) - xmin
            var ww = 0.0
            for (x in 0 until xmax) {
                val d = Math.abs((x + xmin - center + 0.5) * ss)
                k[x] = if (d < 1.0) 1.0 - d else 0.0
                ww += k[x]
            }
            for (x in 0 until xmax) {
                val v = if (ww != 0.0) k[x] / ww else k[x]
                kk[xx * ksize + x] = if (v < 0) (-0.5 + v * (1 shl PRECISION_BITS)).toInt()
                                     else (0.5 + v * (1 shl PRECISION_BITS)).toInt()
            }
            bounds[2 * xx] = xmin
            bounds[2 * xx + 1] = xmax
        }
        return Triple(ksize, bounds, kk)
    }

    /** torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False) of one float plane. */
    private fun torchBilinear(plane: FloatArray, w: Int, h: Int, outW: Int, outH: Int): FloatArray {
        if (outW == w && outH == h) return plane  // to_normalised_float interpolates only when the size differs
        val (x0, x1, lx) = torchIndices(w, outW)
        val (y0, y1, ly) = torchIndices(h, outH)
        return FloatArray(outW * outH) { i ->
            val y = i / outW
            val x = i % outW
            val top = plane[y0[y] * w + x0[x]] * (1f - lx[x]) + plane[y0[y] * w + x1[x]] * lx[x]
            val bottom = plane[y1[y] * w + x0[x]] * (1f - lx[x]) + plane[y1[y] * w + x1[x]] * lx[x]
            top * (1f - ly[y]) + bottom * ly[y]
        }
    }

    /** torch's source indices and weights (area_pixel_compute_source_index, guard_index_and_lambda), in float. */
    private fun torchIndices(inSize: Int, outSize: Int): Triple<IntArray, IntArray, FloatArray> {
        val scale = inSize.toFloat() / outSize
        val i0 = IntArray(outSize)
        val i1 = IntArray(outSize)
        val lambda = FloatArray(outSize)
        for (i in 0 until outSize) {
            val src = Math.max(scale * (i + 0.5f) - 0.5f, 0f)
            i0[i] = Math.min(Math.floor(src.toDouble()).toInt(), inSize - 1)
            i1[i] = i0[i] + if (i0[i] < inSize - 1) 1 else 0
            lambda[i] = Math.min(Math.max(src - i0[i], 0f), 1f)
        }
        return Triple(i0, i1, lambda)
    }
}
