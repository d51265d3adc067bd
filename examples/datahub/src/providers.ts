// The six data providers: the Prisma enum value, the URL slug and the name
// shown on the page.  Order here is the order of the cards on /data.
import { Provider } from "../generated/prisma/client.ts";

export interface ProviderInfo {
  readonly provider: Provider;
  readonly slug: string;
  readonly name: string;
}

export const PROVIDERS: readonly ProviderInfo[] = [
  { provider: Provider.GOOGLE_ADS, slug: "google-ads", name: "Google Ads" },
  { provider: Provider.META_ADS, slug: "meta-ads", name: "Meta Ads" },
  { provider: Provider.LINKEDIN_ADS, slug: "linkedin-ads", name: "LinkedIn" },
  { provider: Provider.TIKTOK_ADS, slug: "tiktok-ads", name: "TikTok Ads" },
  { provider: Provider.GOOGLE_ANALYTICS, slug: "google-analytics", name: "Google Analytics" },
  { provider: Provider.SHOPIFY, slug: "shopify", name: "Shopify" },
];

export function providerBySlug(slug: string): ProviderInfo | undefined {
  return PROVIDERS.find((p) => p.slug === slug);
}
