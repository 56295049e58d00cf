/* The elementwise work of scVI's ZINB log-likelihood (sclecture.scvi._ZINBLogLik), one pass per part.

   sclecture/_native.py builds this file with the system C compiler (-O3 -march=native -ffast-math), which turns
   expf, logf and log1pf inside the `omp simd` loops into glibc's vector maths (libmvec). Torch spends one pass
   over memory per operation; these loops do each part in one. Notation of sclecture.scvi: x_ng counts, mu_ng
   means, theta_g dispersions, eta_ng zero-inflation logits (pi = sigmoid(eta)), r = mu / theta,
   sp = log(1 + r), nb0 = log NB(0) = -theta sp. float32 throughout; cells x genes arrays are row-major. */
#include <math.h>
#include <stdint.h>

/* Part 1, every entry: v_n = sum_g [x = 0] logaddexp(eta, nb0) + [x > 0] nb0 - softplus(eta), written to out,
   and its derivatives by mu, eta and theta per entry, written to dmu, deta, dth. zero = 1[x = 0]. */
void zinb_all_entries(const float *restrict mu, const float *restrict theta, const float *restrict eta,
                      const float *restrict zero, int64_t n, int64_t g, float *restrict out,
                      float *restrict dmu, float *restrict deta, float *restrict dth) {
    for (int64_t i = 0; i < n; i++) {
        const int64_t o = i * g;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < g; j++) {
            float th = theta[j], r = mu[o + j] / th, q = 1.f / (1.f + r), sp = log1pf(r), nb0 = -th * sp;
            float a = eta[o + j], e1 = expf(-fabsf(a)), inv1 = 1.f / (1.f + e1);
            float pi = a >= 0.f ? inv1 : e1 * inv1;                     /* sigmoid(eta) */
            float softplus = fmaxf(a, 0.f) + log1pf(e1);
            float d = a - nb0, e2 = expf(-fabsf(d)), inv2 = 1.f / (1.f + e2);
            float b = d >= 0.f ? inv2 : e2 * inv2;                      /* sigmoid(eta - nb0) = 1 - w */
            float lae = fmaxf(a, nb0) + log1pf(e2);                     /* logaddexp(eta, nb0) */
            int is0 = zero[o + j] > 0.f;
            float w = is0 ? 1.f - b : 1.f;                              /* d v / d nb0 */
            acc += (is0 ? lae : nb0) - softplus;
            dmu[o + j] = -w * q;                                        /* d nb0 / d mu = -q */
            dth[o + j] = w * (r * q - sp);                              /* d nb0 / d theta = r q - sp */
            deta[o + j] = (is0 ? b : 0.f) - pi;
        }
        out[i] = acc;
    }
}

/* lgamma(z) for z > 0 without a scalar call: Stirling's series at w = z + 6 >= 6 (error below 1e-9), shifted back
   with lgamma(z) = lgamma(z + 6) - log(z (z + 1) ... (z + 5)). The products would overflow float32 beyond
   z = 7e12; there they take z = 1e12, an error of 6 log(z / 1e12) against lgamma(z) > 2.6e13, far below its rounding. */
static inline float lgamma_shifted(float z) {
    float w = z + 6.f, iw = 1.f / w, iw2 = iw * iw, c = fminf(z, 1e12f);
    float stirling = (w - 0.5f) * logf(w) - w + 0.91893853f + iw * (1.f / 12 - iw2 * (1.f / 360 - iw2 / 1260));
    return stirling - logf(c * (c + 1.f) * (c + 2.f)) - logf((c + 3.f) * (c + 4.f) * (c + 5.f));
}

/* digamma(z) for z > 0: psi(z) = psi(z + 3) - 1/z - 1/(z + 1) - 1/(z + 2), then psi's asymptotic series at w = z + 3
   (as sclecture.scvi._digamma_above_one). w w would overflow beyond w = 1.8e19 (and -ffast-math's reciprocal of
   inf is NaN): there the series, below 1e-37, takes w = 1e18. */
static inline float digamma_shifted(float z) {
    float w = z + 3.f, c = fminf(w, 1e18f), shift = 1.f / z + 1.f / (z + 1.f) + 1.f / (z + 2.f), iw2 = 1.f / (c * c);
    float series = iw2 * (1.f / 12 - iw2 * (1.f / 120 - iw2 * (1.f / 252 - iw2 * (1.f / 240 - iw2 / 132))));
    return logf(w) - 0.5f / w - series - shift;
}

/* Part 2 at one entry, 0 where x = 0: lgamma(x + theta) - lgamma(theta) - log x! + x (log mu - log theta - sp),
   and its derivatives d/d mu = x (1 / mu - q / theta) and d/d theta = digamma(x + theta) - digamma(theta) - x q / theta.
   lgth, logth, digth: lgamma, log and digamma of theta; lxf = log x!. */
static inline float nb_nonzero(float x, float m, float th, float lgth, float logth, float digth, float lxf,
                               float *dm, float *dt) {
    const float tiny = 1.17549435e-38f;                                 /* mu is floored as in the eager code */
    float r = m / th, q = 1.f / (1.f + r), sp = log1pf(r), xq_t = x * q / th;
    float kept = x > 0.f ? 1.f : 0.f, z = x + th + (1.f - kept);        /* z > 0 where the term is dropped, too */
    float ms = fmaxf(m, tiny);
    *dm = x / ms - xq_t;
    *dt = kept * (digamma_shifted(z) - digth) - xq_t;
    return kept * (x * (logf(ms) - logth - sp) + lgamma_shifted(z) - lgth - lxf);
}

/* Part 2 where x is kept as a cells x genes array (dense counts): adds each cell's sum to out and the derivatives to
   dmu and dth (made by zinb_all_entries, same layout). */
void nb_nonzero_dense(const float *restrict x, const float *restrict mu, const float *restrict theta,
                      const float *restrict lgth, const float *restrict logth, const float *restrict digth,
                      const float *restrict lxf, int64_t n, int64_t g, float *restrict out, float *restrict dmu,
                      float *restrict dth) {
    for (int64_t i = 0; i < n; i++) {
        const int64_t o = i * g;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < g; j++) {
            float dm, dt;
            acc += nb_nonzero(x[o + j], mu[o + j], theta[j], lgth[j], logth[j], digth[j], lxf[o + j], &dm, &dt);
            dmu[o + j] += dm;
            dth[o + j] += dt;
        }
        out[i] += acc;
    }
}

/* Part 2 on the nonzero entries only: entry e has flat index idx[e] = n_ g + gene[e]; those of cell n_ are
   starts[n_] .. starts[n_ + 1] - 1. x and lxf hold one value per entry. */
void nb_nonzero_sparse(const float *restrict x, const float *restrict mu, const int64_t *restrict idx,
                       const int64_t *restrict gene, const int64_t *restrict starts, const float *restrict theta,
                       const float *restrict lgth, const float *restrict logth, const float *restrict digth,
                       const float *restrict lxf, int64_t n, float *restrict out, float *restrict dmu,
                       float *restrict dth) {
    for (int64_t i = 0; i < n; i++) {
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t e = starts[i]; e < starts[i + 1]; e++) {
            const int64_t f = idx[e], gi = gene[e];
            float dm, dt;
            acc += nb_nonzero(x[e], mu[f], theta[gi], lgth[gi], logth[gi], digth[gi], lxf[e], &dm, &dt);
            dmu[f] += dm;                                               /* the indices are distinct */
            dth[f] += dt;
        }
        out[i] += acc;
    }
}

/* The backward: the derivatives above times the cell's incoming gradient go_n; theta's summed over cells. */
void scale_by_cell(const float *restrict go, const float *restrict dmu, const float *restrict deta,
                   const float *restrict dth, int64_t n, int64_t g, float *restrict g_mu, float *restrict g_eta,
                   float *restrict g_theta) {
    for (int64_t j = 0; j < g; j++) g_theta[j] = 0.f;
    for (int64_t i = 0; i < n; i++) {
        const int64_t o = i * g;
        const float c = go[i];
#pragma omp simd
        for (int64_t j = 0; j < g; j++) {
            g_mu[o + j] = dmu[o + j] * c;
            g_eta[o + j] = deta[o + j] * c;
            g_theta[j] += dth[o + j] * c;
        }
    }
}
