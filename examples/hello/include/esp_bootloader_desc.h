/*
 * Bootloader description, laid out like ESP-IDF's esp_bootloader_desc_t.
 * esptool image-info shows it when it starts the image's first DRAM segment.
 */
#pragma once

#include <stdint.h>

#define ESP_BOOTLOADER_DESC_MAGIC_BYTE 0x50u

typedef struct {
    uint8_t magic_byte;    /* ESP_BOOTLOADER_DESC_MAGIC_BYTE */
    uint8_t reserved[3];
    uint32_t version;      /* bootloader version */
    char idf_ver[32];
    char date_time[24];    /* left empty: reproducible builds */
    uint32_t reserved2[4];
} esp_bootloader_desc_t;

_Static_assert(sizeof(esp_bootloader_desc_t) == 80, "esp_bootloader_desc_t must be 80 bytes");
