/*
 * Minimal per-chip register definitions used by the hello example.
 *
 * The build script passes every sdkconfig option as a -D define, including
 * CONFIG_IDF_TARGET_<CHIP>=1, which selects the block below.
 */
#pragma once

#include <stdint.h>

#if defined(CONFIG_IDF_TARGET_ESP32P4)
#define HELLO_UART0_BASE 0x500CA000u
#elif defined(CONFIG_IDF_TARGET_ESP32C2) || defined(CONFIG_IDF_TARGET_ESP32C3) || \
    defined(CONFIG_IDF_TARGET_ESP32C5) || defined(CONFIG_IDF_TARGET_ESP32C6) ||   \
    defined(CONFIG_IDF_TARGET_ESP32H2)
#define HELLO_UART0_BASE 0x60000000u
#else
#error "unsupported CONFIG_IDF_TARGET"
#endif

/* UART_FIFO_REG: writing a byte pushes it into the TX FIFO. */
#define HELLO_UART_FIFO_REG (HELLO_UART0_BASE + 0x00u)
/* UART_STATUS_REG: bits [25:16] hold the number of bytes in the TX FIFO. */
#define HELLO_UART_STATUS_REG (HELLO_UART0_BASE + 0x1Cu)
#define HELLO_UART_TXFIFO_CNT(status) (((status) >> 16) & 0x3FFu)
#define HELLO_UART_FIFO_LEN 128u

static inline void hello_uart_putc(char c)
{
    volatile uint32_t *const fifo = (volatile uint32_t *)HELLO_UART_FIFO_REG;
    volatile uint32_t *const status = (volatile uint32_t *)HELLO_UART_STATUS_REG;

    while (HELLO_UART_TXFIFO_CNT(*status) >= HELLO_UART_FIFO_LEN - 1u) {
        /* wait for room in the TX FIFO */
    }
    *fifo = (uint32_t)(uint8_t)c;
}

static inline void hello_uart_puts(const char *s)
{
    while (*s != '\0') {
        hello_uart_putc(*s++);
    }
}
