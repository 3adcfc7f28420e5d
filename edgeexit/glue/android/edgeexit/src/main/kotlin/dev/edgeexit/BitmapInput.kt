package dev.edgeexit

import android.graphics.Bitmap

/**
 * Classifies an Android [Bitmap], preprocessed as in training: its pixels (any config, read as ARGB_8888) go through
 * [ImageInput.fromArgb] (resize by the manifest's method, normalisation by its mean and std), never through
 * Bitmap.createScaledBitmap, whose filtering differs from training's. Android only (android.graphics); the host JVM
 * test calls [EarlyExitClassifier.classifyArgb], which this calls.
 */
fun EarlyExitClassifier.classify(bitmap: Bitmap): EarlyExitClassifier.Prediction {
    val argb = if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap else bitmap.copy(Bitmap.Config.ARGB_8888, false)
    val pixels = IntArray(argb.width * argb.height)
    argb.getPixels(pixels, 0, argb.width, 0, 0, argb.width, argb.height)
    return classifyArgb(pixels, argb.width, argb.height)
}
