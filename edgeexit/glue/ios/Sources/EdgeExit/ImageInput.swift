// An image as the bundle's input, computed as edgeexit's Python side (edgeexit/images.py, i.e. training) does: the
// line-for-line twin of android/edgeexit/src/main/kotlin/dev/edgeexit/ImageInput.kt (which tests/test_android_jvm.py
// checks against Python within 1e-5). Not compiled on the machines that develop edgeexit (no Swift toolchain there).
import CoreGraphics
import Foundation

/// How an image becomes the bundle's input: the manifest's `input` section, as `EarlyExitClassifier.imageSpec` reads
/// it. `resize` is the method training resized with: "bilinear" (torch's bilinear interpolation without antialias,
/// on [0, 1] floats: the in-memory datasets) or "bilinear_antialias" (PIL's bilinear resize of the 8-bit image:
/// image folders).
public struct ImageSpec {
    public let channels: Int
    public let height: Int
    public let width: Int
    public let mean: [Float]
    public let std: [Float]
    public let resize: String

    public init(channels: Int, height: Int, width: Int, mean: [Float], std: [Float], resize: String) throws {
        guard channels == 1 || channels == 3, height >= 1, width >= 1, mean.count == channels, std.count == channels,
              resize == "bilinear" || resize == "bilinear_antialias" else {
            throw EdgeExitError(code: Int(EE_ERR_ARGUMENT), message:
                "ImageSpec: not an input images can make | got: \(channels) channels, \(height) x \(width), " +
                "\(mean.count) means, \(std.count) stds, resize \(resize) | expected: 1 or 3 channels, one mean and " +
                "std per channel, bilinear | bilinear_antialias")
        }
        self.channels = channels
        self.height = height
        self.width = width
        self.mean = mean
        self.std = std
        self.resize = resize
    }
}

/// Converted to grayscale for a 1-channel bundle (PIL's "L": ITU-R 601-2 luma in fixed point), resized by the
/// manifest's method, scaled to [0, 1], normalised as (x - mean) / std: C x H x W floats for `classify`.
public enum ImageInput {
    /// `rgb`: `width` x `height` pixels row by row, 3 bytes (R, G, B) each.
    public static func fromRGB(_ rgb: [UInt8], width: Int, height: Int, spec: ImageSpec) throws -> [Float] {
        guard width >= 1, height >= 1, rgb.count == 3 * width * height else {
            throw EdgeExitError(code: Int(EE_ERR_ARGUMENT), message:
                "pixel buffer has the wrong size | got: \(rgb.count) bytes | expected: 3 x \(width) x \(height)")
        }
        let n = width * height
        var planes: [[Int]]
        if spec.channels == 3 {
            planes = (0..<3).map { c in (0..<n).map { Int(rgb[3 * $0 + c]) } }
        } else {  // PIL's RGB -> L: (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16
            planes = [(0..<n).map { (i: Int) -> Int in
                (Int(rgb[3 * i]) * 19595 + Int(rgb[3 * i + 1]) * 38470 + Int(rgb[3 * i + 2]) * 7471 + 0x8000) >> 16
            }]
        }
        let size = spec.height * spec.width
        var out = [Float](repeating: 0, count: spec.channels * size)
        for c in 0..<spec.channels {
            let scaled: [Float]
            if spec.resize == "bilinear_antialias" {
                scaled = pilBilinear(planes[c], width, height, spec.width, spec.height).map { Float($0) / 255 }
            } else {
                scaled = torchBilinear(planes[c].map { Float($0) / 255 }, width, height, spec.width, spec.height)
            }
            for i in 0..<size { out[c * size + i] = (scaled[i] - spec.mean[c]) / spec.std[c] }
        }
        return out
    }

    /// A CGImage drawn into 8-bit RGB (alpha skipped, as PIL's RGBA -> RGB drops it), then `fromRGB`. An RGB image
    /// is drawn in its own colour space, so its stored values come through unconverted, as PIL reads a file (PIL does
    /// no colour management); any other image is converted to sRGB.
    public static func fromCGImage(_ image: CGImage, spec: ImageSpec) throws -> [Float] {
        let width = image.width, height = image.height
        let space = image.colorSpace.flatMap { $0.model == .rgb ? $0 : nil } ?? CGColorSpace(name: CGColorSpace.sRGB)!
        var rgba = [UInt8](repeating: 0, count: 4 * width * height)
        let drawn: Bool = rgba.withUnsafeMutableBytes { buffer in
            guard let context = CGContext(data: buffer.baseAddress, width: width, height: height, bitsPerComponent: 8,
                                          bytesPerRow: 4 * width, space: space,
                                          bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else { return false }
            context.draw(image, in: CGRect(x: 0, y: 0, width: width, height: height))
            return true
        }
        guard drawn else {
            throw EdgeExitError(code: Int(EE_ERR_ARGUMENT), message:
                "could not draw the image into 8-bit RGB | got: \(width) x \(height) | expected: a drawable CGImage")
        }
        var rgb = [UInt8](repeating: 0, count: 3 * width * height)
        for i in 0..<(width * height) {
            rgb[3 * i] = rgba[4 * i]
            rgb[3 * i + 1] = rgba[4 * i + 1]
            rgb[3 * i + 2] = rgba[4 * i + 2]
        }
        return try fromRGB(rgb, width: width, height: height, spec: spec)
    }

    private static let precisionBits = 32 - 8 - 2  // PIL's fixed point for 8-bit images (Resample.c)

    private static func clip8(_ ss: Int) -> Int { min(255, max(0, ss >> precisionBits)) }

    /// PIL's Image.resize(BILINEAR) of one 8-bit plane: a horizontal then a vertical pass, each rounded to 8 bits.
    private static func pilBilinear(_ plane: [Int], _ w: Int, _ h: Int, _ outW: Int, _ outH: Int) -> [Int] {
        var img = plane
        var width = w
        if outW != w {
            let (ksize, bounds, kk) = pilCoefficients(w, outW)
            img = (0..<(outW * h)).map { (i: Int) -> Int in
                let y = i / outW, x = i % outW
                var ss = 1 << (precisionBits - 1)
                for t in 0..<bounds[2 * x + 1] { ss += plane[y * w + bounds[2 * x] + t] * kk[x * ksize + t] }
                return clip8(ss)
            }
            width = outW
        }
        if outH != h {
            let src = img
            let (ksize, bounds, kk) = pilCoefficients(h, outH)
            img = (0..<(width * outH)).map { (i: Int) -> Int in
                let y = i / width, x = i % width
                var ss = 1 << (precisionBits - 1)
                for t in 0..<bounds[2 * y + 1] { ss += src[(bounds[2 * y] + t) * width + x] * kk[y * ksize + t] }
                return clip8(ss)
            }
        }
        return img
    }

    /// PIL's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter (support 1).
    private static func pilCoefficients(_ inSize: Int, _ outSize: Int) -> (Int, [Int], [Int]) {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = scale < 1.0 ? 1.0 : scale
        let support = 1.0 * filterScale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var bounds = [Int](repeating: 0, count: 2 * outSize)
        var kk = [Int](repeating: 0, count: outSize * ksize)
        var k = [Double](repeating: 0, count: ksize)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let ss = 1.0 / filterScale
            let xmin = max(0, Int(center - support + 0.5))
            let xmax = min(inSize, Int(center + support + 0.5)) - xmin
            var ww = 0.0
            for x in 0..<max(0, xmax) {
                let d = abs((Double(x + xmin) - center + 0.5) * ss)
                k[x] = d < 1.0 ? 1.0 - d : 0.0
                ww += k[x]
            }
            for x in 0..<max(0, xmax) {
                let v = ww != 0.0 ? k[x] / ww : k[x]
                let scaled = v * Double(1 << precisionBits)
                kk[xx * ksize + x] = v < 0 ? Int(-0.5 + scaled) : Int(0.5 + scaled)
            }
            bounds[2 * xx] = xmin
            bounds[2 * xx + 1] = xmax
        }
        return (ksize, bounds, kk)
    }

    /// torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False) of one float plane.
    private static func torchBilinear(_ plane: [Float], _ w: Int, _ h: Int, _ outW: Int, _ outH: Int) -> [Float] {
        if outW == w && outH == h { return plane }  // to_normalised_float interpolates only when the size differs
        let (x0, x1, lx) = torchIndices(w, outW)
        let (y0, y1, ly) = torchIndices(h, outH)
        return (0..<(outW * outH)).map { (i: Int) -> Float in
            let y = i / outW, x = i % outW
            let top = plane[y0[y] * w + x0[x]] * (1 - lx[x]) + plane[y0[y] * w + x1[x]] * lx[x]
            let bottom = plane[y1[y] * w + x0[x]] * (1 - lx[x]) + plane[y1[y] * w + x1[x]] * lx[x]
            return top * (1 - ly[y]) + bottom * ly[y]
        }
    }

    /// torch's source indices and weights (area_pixel_compute_source_index, guard_index_and_lambda), in Float.
    private static func torchIndices(_ inSize: Int, _ outSize: Int) -> ([Int], [Int], [Float]) {
        let scale = Float(inSize) / Float(outSize)
        var i0 = [Int](repeating: 0, count: outSize), i1 = i0
        var lambda = [Float](repeating: 0, count: outSize)
        for i in 0..<outSize {
            let src = max(scale * (Float(i) + 0.5) - 0.5, 0)
            i0[i] = min(Int(src.rounded(.down)), inSize - 1)
            i1[i] = i0[i] + (i0[i] < inSize - 1 ? 1 : 0)
            lambda[i] = min(max(src - Float(i0[i]), 0), 1)
        }
        return (i0, i1, lambda)
    }
}
